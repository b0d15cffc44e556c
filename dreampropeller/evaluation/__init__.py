"""dreampropeller.evaluation"""
