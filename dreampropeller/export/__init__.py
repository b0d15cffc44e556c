"""dreampropeller.export"""
