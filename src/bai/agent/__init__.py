"""bai.agent"""
