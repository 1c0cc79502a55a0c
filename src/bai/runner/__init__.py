"""The in-sandbox runner. Standard library only, Python >= 3.9: it runs under
whatever interpreter the sandbox offers, not the agent's."""
