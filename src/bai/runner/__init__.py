"""The in-sandbox runner. Standard library only, Python >= 3.9: it runs under
whatever interpreter the sandbox offers, not the agent's.

    protocol.py        agent ↔ runner messages (shared with the agent)
    main.py            entry point; Runner: agent messages → engine handlers
    agent_connection.py  the runner's end of the agent socket: frames in, messages out
    loop.py            selector loop, timers, reaping (the runner is PID 1)
    frames.py          length-prefixed framing, split apart from decoding
    process.py         dumpable flag, OOM score, wait statuses
    engines/           Engine interface and registry; engines/python.py, python_child.py
    control.py         runner ↔ REPL child messages
    repl.py, stdio.py  what runs inside the forked REPL child
"""
