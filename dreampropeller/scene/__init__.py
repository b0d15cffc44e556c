"""dreampropeller.scene"""
