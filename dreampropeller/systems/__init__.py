"""dreampropeller.systems"""
