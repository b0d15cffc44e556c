/* dreampropeller report viewer: a small WebGL viewer of a binary glTF (.glb) mesh and of Gaussian
 * splats, embedded as base64 in the report so that it opens from the file system with no network.
 *
 * Mesh: POSITION, NORMAL (computed smooth when absent), COLOR_0 (else the material's base colour),
 * indices; every node's transform. Lambert shading with a head light, two-sided.
 * Splats: points with each Gaussian's colour and size (a preview, not a 3DGS rasterizer).
 * Orbit: drag; zoom: wheel; reset: double-click. Viewers with the same data-group share their camera.
 *
 * Part of dreampropeller (Apache-2.0). No dependencies.
 */
(function () {
  "use strict";

  // ------------------------------------------------------------------ small matrix helpers (column-major)
  function mat4Identity() {
    return new Float32Array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
  }
  function mat4Mul(a, b) {
    const o = new Float32Array(16);
    for (let c = 0; c < 4; c++) {
      for (let r = 0; r < 4; r++) {
        let s = 0;
        for (let k = 0; k < 4; k++) s += a[k * 4 + r] * b[c * 4 + k];
        o[c * 4 + r] = s;
      }
    }
    return o;
  }
  function perspective(fovy, aspect, near, far) {
    const f = 1 / Math.tan(fovy / 2);
    const o = new Float32Array(16);
    o[0] = f / aspect;
    o[5] = f;
    o[10] = (far + near) / (near - far);
    o[11] = -1;
    o[14] = (2 * far * near) / (near - far);
    return o;
  }
  function sub(a, b) {
    return [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
  }
  function cross(a, b) {
    return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  }
  function normalize(a) {
    const l = Math.hypot(a[0], a[1], a[2]) || 1;
    return [a[0] / l, a[1] / l, a[2] / l];
  }
  function dot(a, b) {
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  }
  function lookAt(eye, target, up) {
    const z = normalize(sub(eye, target));
    const x = normalize(cross(up, z));
    const y = cross(z, x);
    return new Float32Array([
      x[0], y[0], z[0], 0,
      x[1], y[1], z[1], 0,
      x[2], y[2], z[2], 0,
      -dot(x, eye), -dot(y, eye), -dot(z, eye), 1,
    ]);
  }
  function trs(node) {
    if (node.matrix) return new Float32Array(node.matrix);
    const t = node.translation || [0, 0, 0];
    const q = node.rotation || [0, 0, 0, 1];
    const s = node.scale || [1, 1, 1];
    const [x, y, z, w] = q;
    const r = [
      1 - 2 * (y * y + z * z), 2 * (x * y + z * w), 2 * (x * z - y * w),
      2 * (x * y - z * w), 1 - 2 * (x * x + z * z), 2 * (y * z + x * w),
      2 * (x * z + y * w), 2 * (y * z - x * w), 1 - 2 * (x * x + y * y),
    ];
    return new Float32Array([
      r[0] * s[0], r[1] * s[0], r[2] * s[0], 0,
      r[3] * s[1], r[4] * s[1], r[5] * s[1], 0,
      r[6] * s[2], r[7] * s[2], r[8] * s[2], 0,
      t[0], t[1], t[2], 1,
    ]);
  }

  // ------------------------------------------------------------------ decoding
  function base64Bytes(text) {
    const s = atob(text.replace(/\s+/g, ""));
    const out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }

  const COMPONENTS = { SCALAR: 1, VEC2: 2, VEC3: 3, VEC4: 4, MAT4: 16 };
  const TYPES = {
    5120: [Int8Array, 127],
    5121: [Uint8Array, 255],
    5122: [Int16Array, 32767],
    5123: [Uint16Array, 65535],
    5125: [Uint32Array, 0],
    5126: [Float32Array, 0],
  };

  /** An accessor's values as a Float64Array (normalized integers mapped to [0, 1] / [-1, 1]). */
  function readAccessor(gltf, bin, index) {
    const acc = gltf.accessors[index];
    if (acc.sparse) throw new Error("sparse accessors are not supported");
    const n = COMPONENTS[acc.type];
    const [Type, max] = TYPES[acc.componentType];
    const out = new Float64Array(acc.count * n);
    if (acc.bufferView === undefined) return out;
    const view = gltf.bufferViews[acc.bufferView];
    const offset = (view.byteOffset || 0) + (acc.byteOffset || 0);
    const size = Type.BYTES_PER_ELEMENT;
    const stride = view.byteStride || n * size;
    const dv = new DataView(bin.buffer, bin.byteOffset, bin.byteLength);
    const get = {
      5120: (o) => dv.getInt8(o),
      5121: (o) => dv.getUint8(o),
      5122: (o) => dv.getInt16(o, true),
      5123: (o) => dv.getUint16(o, true),
      5125: (o) => dv.getUint32(o, true),
      5126: (o) => dv.getFloat32(o, true),
    }[acc.componentType];
    const scale = acc.normalized && max ? 1 / max : 1;
    for (let i = 0; i < acc.count; i++) {
      for (let c = 0; c < n; c++) {
        let v = get(offset + i * stride + c * size) * scale;
        if (acc.normalized && v < -1) v = -1;
        out[i * n + c] = v;
      }
    }
    return out;
  }

  /** The triangles of every mesh in a .glb's default scene, as non-indexed arrays. */
  function parseGlb(bytes) {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    if (dv.getUint32(0, true) !== 0x46546c67) throw new Error("not a binary glTF file");
    let gltf = null;
    let bin = new Uint8Array(0);
    for (let p = 12; p + 8 <= dv.getUint32(8, true); ) {
      const len = dv.getUint32(p, true);
      const type = dv.getUint32(p + 4, true);
      const chunk = bytes.subarray(p + 8, p + 8 + len);
      if (type === 0x4e4f534a) gltf = JSON.parse(new TextDecoder().decode(chunk));
      else if (type === 0x004e4942) bin = chunk;
      p += 8 + len;
    }
    if (!gltf) throw new Error("glb has no JSON chunk");
    const pos = [];
    const nrm = [];
    const col = [];
    const scene = gltf.scenes ? gltf.scenes[gltf.scene || 0] : { nodes: (gltf.nodes || []).map((_, i) => i) };
    const visit = (index, parent) => {
      const node = gltf.nodes[index];
      const world = mat4Mul(parent, trs(node));
      if (node.mesh !== undefined) addMesh(gltf.meshes[node.mesh], world);
      for (const child of node.children || []) visit(child, world);
    };
    const addMesh = (mesh, m) => {
      for (const prim of mesh.primitives) {
        if (prim.mode !== undefined && prim.mode !== 4) continue; // triangles only
        const a = prim.attributes;
        const p = readAccessor(gltf, bin, a.POSITION);
        const count = p.length / 3;
        const idx = prim.indices !== undefined ? readAccessor(gltf, bin, prim.indices) : null;
        const tri = idx || Float64Array.from({ length: count }, (_, i) => i);
        const wp = new Float64Array(p.length);
        for (let i = 0; i < count; i++) {
          for (let r = 0; r < 3; r++) {
            wp[i * 3 + r] = m[r] * p[i * 3] + m[4 + r] * p[i * 3 + 1] + m[8 + r] * p[i * 3 + 2] + m[12 + r];
          }
        }
        let n;
        if (a.NORMAL !== undefined) {
          const raw = readAccessor(gltf, bin, a.NORMAL);
          n = new Float64Array(raw.length);
          for (let i = 0; i < count; i++) {
            const v = [0, 1, 2].map((r) => m[r] * raw[i * 3] + m[4 + r] * raw[i * 3 + 1] + m[8 + r] * raw[i * 3 + 2]);
            n.set(normalize(v), i * 3);
          }
        } else {
          n = new Float64Array(p.length); // area-weighted smooth normals
          for (let t = 0; t + 2 < tri.length; t += 3) {
            const [i, j, k] = [tri[t], tri[t + 1], tri[t + 2]];
            const e1 = sub(wp.subarray(j * 3, j * 3 + 3), wp.subarray(i * 3, i * 3 + 3));
            const e2 = sub(wp.subarray(k * 3, k * 3 + 3), wp.subarray(i * 3, i * 3 + 3));
            const f = cross(e1, e2);
            for (const v of [i, j, k]) for (let r = 0; r < 3; r++) n[v * 3 + r] += f[r];
          }
          for (let i = 0; i < count; i++) n.set(normalize(n.subarray(i * 3, i * 3 + 3)), i * 3);
        }
        let c = null;
        let cn = 0;
        if (a.COLOR_0 !== undefined) {
          c = readAccessor(gltf, bin, a.COLOR_0);
          cn = c.length / count;
        }
        // glTF: colour = baseColorFactor (default 1) x COLOR_0; light grey for a mesh with neither
        const mat = prim.material !== undefined && gltf.materials ? gltf.materials[prim.material] : null;
        const pbr = (mat && mat.pbrMetallicRoughness) || {};
        const factor = (pbr.baseColorFactor || [1, 1, 1]).slice(0, 3);
        const plain = mat ? factor : [0.8, 0.8, 0.8];
        for (let t = 0; t + 2 < tri.length; t += 3) {
          for (let s = 0; s < 3; s++) {
            const v = tri[t + s];
            for (let r = 0; r < 3; r++) {
              pos.push(wp[v * 3 + r]);
              nrm.push(n[v * 3 + r]);
              col.push(c ? c[v * cn + r] * factor[r] : plain[r]);
            }
          }
        }
      }
    };
    for (const index of scene.nodes || []) visit(index, mat4Identity());
    return { positions: new Float32Array(pos), normals: new Float32Array(nrm), colors: new Float32Array(col) };
  }

  /** Splats packed by dreampropeller.report.splats: uint32 n, float32 xyz[n], float32 size[n], uint8 rgba[n]. */
  function parseSplats(bytes) {
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const n = dv.getUint32(0, true);
    const buf = bytes.buffer.slice(bytes.byteOffset + 4, bytes.byteOffset + bytes.byteLength);
    return {
      positions: new Float32Array(buf, 0, n * 3),
      sizes: new Float32Array(buf, n * 12, n),
      colors: new Uint8Array(buf, n * 16, n * 4),
    };
  }

  function bounds(positions) {
    const lo = [Infinity, Infinity, Infinity];
    const hi = [-Infinity, -Infinity, -Infinity];
    for (let i = 0; i < positions.length; i += 3) {
      for (let r = 0; r < 3; r++) {
        lo[r] = Math.min(lo[r], positions[i + r]);
        hi[r] = Math.max(hi[r], positions[i + r]);
      }
    }
    if (!(lo[0] <= hi[0])) return { center: [0, 0, 0], radius: 1 };
    const center = [0, 1, 2].map((r) => (lo[r] + hi[r]) / 2);
    return { center, radius: Math.max(Math.hypot(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]) / 2, 1e-6) };
  }

  // ------------------------------------------------------------------ GL
  const MESH_VS = `
attribute vec3 position; attribute vec3 normal; attribute vec3 color;
uniform mat4 view; uniform mat4 proj;
varying vec3 vNormal; varying vec3 vColor;
void main() {
  vNormal = mat3(view) * normal; vColor = color;
  gl_Position = proj * view * vec4(position, 1.0);
}`;
  const MESH_FS = `
precision mediump float;
varying vec3 vNormal; varying vec3 vColor;
void main() {
  vec3 light = normalize(vec3(0.35, 0.55, 1.0));
  float d = abs(dot(normalize(vNormal), light));
  gl_FragColor = vec4(vColor * (0.35 + 0.65 * d), 1.0);
}`;
  const POINT_VS = `
attribute vec3 position; attribute float size; attribute vec4 color;
uniform mat4 view; uniform mat4 proj; uniform float focal;
varying vec4 vColor;
void main() {
  vec4 p = view * vec4(position, 1.0);
  gl_Position = proj * p;
  gl_PointSize = clamp(2.0 * size * focal / max(-p.z, 1e-3), 1.5, 48.0);
  vColor = color;
}`;
  const POINT_FS = `
precision mediump float;
varying vec4 vColor;
void main() {
  vec2 d = gl_PointCoord - vec2(0.5);
  if (dot(d, d) > 0.25) discard;
  gl_FragColor = vec4(vColor.rgb, 1.0);
}`;

  function program(gl, vs, fs) {
    const make = (type, src) => {
      const s = gl.createShader(type);
      gl.shaderSource(s, src);
      gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
      return s;
    };
    const p = gl.createProgram();
    gl.attachShader(p, make(gl.VERTEX_SHADER, vs));
    gl.attachShader(p, make(gl.FRAGMENT_SHADER, fs));
    gl.linkProgram(p);
    if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(p));
    return p;
  }

  function buffer(gl, data) {
    const b = gl.createBuffer();
    gl.bindBuffer(gl.ARRAY_BUFFER, b);
    gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
    return b;
  }

  function attribute(gl, prog, name, buf, size, type, normalized) {
    const loc = gl.getAttribLocation(prog, name);
    if (loc < 0) return;
    gl.bindBuffer(gl.ARRAY_BUFFER, buf);
    gl.enableVertexAttribArray(loc);
    gl.vertexAttribPointer(loc, size, type || gl.FLOAT, !!normalized, 0, 0);
  }

  // ------------------------------------------------------------------ camera groups
  const groups = {};
  function cameraOf(group) {
    const fresh = { azimuth: 0.6, elevation: 0.35, zoom: 1, viewers: [] };
    if (!group) return fresh;
    groups[group] = groups[group] || fresh;
    return groups[group];
  }

  // ------------------------------------------------------------------ the viewer
  class Viewer {
    constructor(canvas) {
      this.canvas = canvas;
      this.camera = cameraOf(canvas.dataset.group);
      this.camera.viewers.push(this);
      const options = { antialias: true, preserveDrawingBuffer: true };
      const gl = canvas.getContext("webgl2", options) || canvas.getContext("webgl", options);
      if (!gl) throw new Error("this browser has no WebGL");
      this.gl = gl;
      this.drawables = {};
      this.background = (canvas.dataset.background || "0.93,0.94,0.96").split(",").map(Number);
      const glb = canvas.dataset.glb && document.getElementById(canvas.dataset.glb);
      if (glb) this.drawables.mesh = this.meshDrawable(parseGlb(base64Bytes(glb.textContent)));
      const splats = canvas.dataset.splats && document.getElementById(canvas.dataset.splats);
      if (splats) this.drawables.splats = this.splatDrawable(parseSplats(base64Bytes(splats.textContent)));
      const names = Object.keys(this.drawables);
      if (!names.length) throw new Error("nothing to show");
      this.mode = names.includes(canvas.dataset.mode) ? canvas.dataset.mode : names[0];
      this.bounds = this.drawables[this.mode].bounds;
      this.listen();
      this.requestDraw();
    }

    meshDrawable(mesh) {
      const gl = this.gl;
      const prog = program(gl, MESH_VS, MESH_FS);
      const bufs = [buffer(gl, mesh.positions), buffer(gl, mesh.normals), buffer(gl, mesh.colors)];
      return {
        bounds: bounds(mesh.positions),
        draw: (view, proj) => {
          gl.useProgram(prog);
          attribute(gl, prog, "position", bufs[0], 3);
          attribute(gl, prog, "normal", bufs[1], 3);
          attribute(gl, prog, "color", bufs[2], 3);
          gl.uniformMatrix4fv(gl.getUniformLocation(prog, "view"), false, view);
          gl.uniformMatrix4fv(gl.getUniformLocation(prog, "proj"), false, proj);
          gl.drawArrays(gl.TRIANGLES, 0, mesh.positions.length / 3);
        },
      };
    }

    splatDrawable(s) {
      const gl = this.gl;
      const prog = program(gl, POINT_VS, POINT_FS);
      const bufs = [buffer(gl, s.positions), buffer(gl, s.sizes), buffer(gl, s.colors)];
      return {
        bounds: bounds(s.positions),
        draw: (view, proj, focal) => {
          gl.useProgram(prog);
          attribute(gl, prog, "position", bufs[0], 3);
          attribute(gl, prog, "size", bufs[1], 1);
          attribute(gl, prog, "color", bufs[2], 4, gl.UNSIGNED_BYTE, true);
          gl.uniformMatrix4fv(gl.getUniformLocation(prog, "view"), false, view);
          gl.uniformMatrix4fv(gl.getUniformLocation(prog, "proj"), false, proj);
          gl.uniform1f(gl.getUniformLocation(prog, "focal"), focal);
          gl.drawArrays(gl.POINTS, 0, s.sizes.length);
        },
      };
    }

    setMode(mode) {
      if (!this.drawables[mode]) return;
      this.mode = mode;
      this.bounds = this.drawables[mode].bounds;
      this.requestDraw();
    }

    listen() {
      const c = this.canvas;
      let last = null;
      c.addEventListener("pointerdown", (e) => {
        last = [e.clientX, e.clientY];
        c.setPointerCapture(e.pointerId);
      });
      c.addEventListener("pointermove", (e) => {
        if (!last) return;
        const cam = this.camera;
        cam.azimuth -= (e.clientX - last[0]) * 0.01;
        cam.elevation = Math.max(-1.5, Math.min(1.5, cam.elevation + (e.clientY - last[1]) * 0.01));
        last = [e.clientX, e.clientY];
        this.redrawGroup();
      });
      const stop = () => (last = null);
      c.addEventListener("pointerup", stop);
      c.addEventListener("pointercancel", stop);
      c.addEventListener(
        "wheel",
        (e) => {
          e.preventDefault();
          this.camera.zoom = Math.max(0.2, Math.min(5, this.camera.zoom * Math.exp(e.deltaY * 0.001)));
          this.redrawGroup();
        },
        { passive: false }
      );
      c.addEventListener("dblclick", () => {
        Object.assign(this.camera, { azimuth: 0.6, elevation: 0.35, zoom: 1 });
        this.redrawGroup();
      });
      if (window.ResizeObserver) new ResizeObserver(() => this.requestDraw()).observe(c);
    }

    redrawGroup() {
      for (const v of this.camera.viewers) v.requestDraw();
    }

    requestDraw() {
      if (this.pending) return;
      this.pending = true;
      requestAnimationFrame(() => {
        this.pending = false;
        this.draw();
      });
    }

    draw() {
      const gl = this.gl;
      const c = this.canvas;
      const dpr = window.devicePixelRatio || 1;
      const w = Math.max(1, Math.round(c.clientWidth * dpr));
      const h = Math.max(1, Math.round(c.clientHeight * dpr));
      if (c.width !== w || c.height !== h) {
        c.width = w;
        c.height = h;
      }
      gl.viewport(0, 0, w, h);
      const [r, g, b] = this.background;
      gl.clearColor(r, g, b, 1);
      gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
      gl.enable(gl.DEPTH_TEST);
      const { center, radius } = this.bounds;
      const cam = this.camera;
      const fovy = (40 * Math.PI) / 180;
      const dist = (radius / Math.sin(fovy / 2)) * 1.1 * cam.zoom;
      const eye = [
        center[0] + dist * Math.cos(cam.elevation) * Math.sin(cam.azimuth),
        center[1] + dist * Math.sin(cam.elevation),
        center[2] + dist * Math.cos(cam.elevation) * Math.cos(cam.azimuth),
      ];
      const view = lookAt(eye, center, [0, 1, 0]);
      const proj = perspective(fovy, w / h, dist / 100, dist + radius * 4);
      this.drawables[this.mode].draw(view, proj, h / (2 * Math.tan(fovy / 2)));
      c.dataset.ready = "1";
    }
  }

  function mountAll() {
    for (const canvas of document.querySelectorAll("canvas.dp-viewer")) {
      try {
        canvas.viewer = new Viewer(canvas);
      } catch (err) {
        canvas.dataset.error = String(err && err.message ? err.message : err);
        const note = document.createElement("p");
        note.className = "viewer-error";
        note.textContent = "3D viewer unavailable: " + canvas.dataset.error;
        canvas.replaceWith(note);
      }
    }
    for (const button of document.querySelectorAll("button[data-viewer-mode]")) {
      button.addEventListener("click", () => {
        const canvas = document.getElementById(button.dataset.viewer);
        if (canvas && canvas.viewer) canvas.viewer.setMode(button.dataset.viewerMode);
        for (const b of button.parentElement.querySelectorAll("button")) b.classList.toggle("active", b === button);
      });
    }
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", mountAll);
  else mountAll();
})();
