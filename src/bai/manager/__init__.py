"""bai.manager"""
