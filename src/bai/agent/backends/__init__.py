"""bai.agent.backends"""
