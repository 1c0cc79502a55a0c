"""bai.agent: the node daemon that runs sessions in sandboxes for the manager.

    config.py         AgentConfig (BAI_AGENT_*), parsed once by the caller
    agent.py          Agent: the methods the manager calls (in process, or through rpc.py)
    session.py        one session's async shell: runner connection, timers, backpressure
    runs.py           the I/O-free run core: statuses, console merging, per-response caps
    cgroups.py        per-session cgroups, v1 and v2 drivers: limits, stats, join, kill
    scratch.py        scratch disks (/home/work): hostfile (ext4 image), memory (tmpfs) or
                      a plain dir; create, size, remove and reconcile without following links
    mounts.py         loop devices, mount(2) and umount2(2) through ioctls and ctypes
    backends/         the Backend / Sandbox interface (base.py) and its registry;
                      local.py + local_sandbox.py (bubblewrap), bwrap.py (its command
                      line), child.py (processes started off the event loop)
    rpc.py            the agent RPC server: the routes of bai.common.agent_calls, one
                      cluster-secret check in front of them all
    rpc_handlers.py   each declared call bound to its Agent method (routes and in-process)
    rpc_terminal.py   the terminal call's WebSocket frames
    heartbeat.py      heartbeats and "session gone" reports to the manager
    main.py           the cluster agent: all of the above wired together
    cli.py            ``bai agent``, which runs main.py

Errors: callers see bai.common.errors only (SessionNotFound, InvalidRequest,
SessionCreationFailed, SessionRestartFailed, ExecutionFailed) and, from
``Agent.start``, ``backends.base.BackendUnavailable`` (a ServiceUnavailable).
``cgroups.CgroupError`` and ``heartbeat.ManagerUnreachable`` never leave their
modules' callers.
"""
