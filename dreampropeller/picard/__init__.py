"""dreampropeller.picard"""
