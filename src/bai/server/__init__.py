"""bai.server"""
