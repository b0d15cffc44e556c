"""dreampropeller.optim"""
