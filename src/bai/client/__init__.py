"""bai.client"""
