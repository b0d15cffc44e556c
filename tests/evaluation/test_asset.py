import pytest
import torch

from dreampropeller.evaluation.asset import evaluate_asset, evaluation_cameras, library_render_fn
from dreampropeller.evaluation.classifier import ClassifierWeightsMissing, load_classifier
from dreampropeller.guidance.tiny.library import (
    COLOUR_NAMES,
    SHAPE_NAMES,
    PromptError,
    all_prompts,
    parse_prompt,
    shape_sdf,
)


@pytest.fixture(scope="module")
def classifier():
    return load_classifier()


@pytest.mark.parametrize("prompt", ["a red cube", "a purple sphere", "a cone that is blue", "yellow torus"])
def test_true_object_scores_perfectly(prompt, classifier):
    shape, colour = parse_prompt(prompt)
    result = evaluate_asset(library_render_fn(shape, colour), prompt, classifier=classifier)
    assert result["shape_r_precision"] == 1.0
    assert result["silhouette_iou"] > 0.999
    assert result["colour_accuracy"] == 1.0
    assert result["clf_r_precision"] == 1.0
    assert result["clf_shape_accuracy"] == 1.0 and result["clf_colour_accuracy"] == 1.0
    assert result["feature_distance"] < 1e-3


def test_wrong_shape_loses(classifier):
    result = evaluate_asset(library_render_fn("sphere", "red"), "a red cube", classifier=classifier)
    assert result["shape_r_precision"] == 0.0 and result["predicted_shape"] == "sphere"
    assert result["silhouette_iou"] < 0.9
    assert result["shape_ious"]["sphere"] > result["shape_ious"]["cube"]
    assert result["colour_accuracy"] == 1.0
    assert result["clf_r_precision"] == 0.0
    assert result["feature_distance"] > 1.0


def test_wrong_colour_loses(classifier):
    result = evaluate_asset(library_render_fn("cube", "blue"), "a red cube", classifier=classifier)
    assert result["shape_r_precision"] == 1.0
    assert result["colour_accuracy"] == 0.0 and result["predicted_colour"] == "blue"
    assert result["clf_r_precision"] == 0.0 and result["clf_colour_accuracy"] == 0.0


def test_low_resolution_renderer_and_mesh(classifier):
    """A render_fn at 32 px works the same, and a mesh adds the chamfer distance."""
    import mcubes

    lin = torch.linspace(-0.6, 0.6, 40)
    values = shape_sdf("cylinder", torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1)).numpy()
    verts, faces = mcubes.marching_cubes(-values, 0.0)
    mesh = (verts / 39 * 1.2 - 0.6, faces.astype("int64"))
    fn = library_render_fn("cylinder", "green")
    result = evaluate_asset(lambda cams: fn(cams, 32), "a green cylinder", mesh, classifier=classifier)
    assert result["shape_r_precision"] == 1.0 and result["clf_r_precision"] == 1.0
    assert result["chamfer"] < 0.003


def test_classifier_names_every_library_object(classifier):
    """The evaluator reads all 48 combinations (held-out ones included) from the evaluation views."""
    cams = evaluation_cameras()
    wrong = []
    for prompt in all_prompts():
        shape, colour = parse_prompt(prompt)
        rgb, _ = library_render_fn(shape, colour)(cams, 32)
        s_logits, c_logits, _ = classifier(rgb.permute(0, 3, 1, 2))
        if (s_logits.argmax(-1) != SHAPE_NAMES.index(shape)).any() or (
            c_logits.argmax(-1) != COLOUR_NAMES.index(colour)
        ).any():
            wrong.append(prompt)
    assert wrong == []


def test_bad_inputs(classifier, tmp_path):
    with pytest.raises(PromptError):
        evaluate_asset(library_render_fn("cube", "red"), "a red dragon", classifier=classifier)
    with pytest.raises(ValueError, match="rgb"):
        evaluate_asset(
            lambda cams: (torch.ones(1, 3, 8, 8), torch.ones(1, 1, 8, 8)), "a red cube", classifier=classifier
        )
    with pytest.raises(ClassifierWeightsMissing, match="prior train-evaluator"):
        load_classifier(tmp_path)


def test_the_library_truth_is_uniformly_coloured_and_a_speckled_albedo_is_not(classifier):
    truth = library_render_fn("cube", "red")
    result = evaluate_asset(truth, "a red cube", classifier=classifier)
    assert result["colour_spread"] < 1e-3

    def speckled(cameras):
        rgb, alpha = truth(cameras)
        noise = torch.rand(rgb.shape, generator=torch.Generator().manual_seed(0))
        return (0.5 * rgb + 0.5 * noise), alpha

    noisy = evaluate_asset(truth, "a red cube", classifier=classifier, albedo_fn=speckled)
    assert noisy["colour_spread"] > 0.05
    assert noisy["shape_r_precision"] == result["shape_r_precision"]  # the lit render is the same
