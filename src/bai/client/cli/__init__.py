"""bai.client.cli"""
