"""bai.manager.store"""
