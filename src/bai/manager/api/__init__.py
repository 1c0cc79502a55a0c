"""bai.manager.api"""
