"""dreampropeller.guidance"""
