"""The Linux-only wing: running a container (docker run's semantics, namespaces or chroot).

    run.py       `run`: the path chosen once (fast or ORM), image, snapshot, row, spawn, record
    fast.py      the fast path: a tagged image with a built snapshot, without peewee (schema/lite.py)
    options.py   RunOptions (a Record: the hot path's value class, no dataclasses import), their
                 checks; argv and env as docker computes them; random container names
    users.py     -u / config.User resolved inside the rootfs
    rootfs.py    ROOT/containers/<id>/: overlay dirs or a private copy
    isolate.py   spawn(): the supervisor side (fork, the error pipe, signals, wait); the specs
    child.py     the children's side: namespaces, mounts, pivot_root, /proc, /dev, caps, exec
    syscalls.py  mount/unshare/pivot_root/prctl through _ctypes (ctypes' C half)
    tty.py       -t: window size and the pty pump
    supervisor.py  run -d / start: the per-container supervisor process (launch, restart policies)
    control.py   start/stop/kill/wait/logs/systemd unit from the outside (signals checked by start time)
    logs.py      the json-file log: writer with rotation, reader, follow
    tee.py       a foreground run's output shown and recorded

This __init__ imports nothing (fcntl, ctypes, termios and pty are imported by the submodules
that use them), so the rest of the engine imports on any OS.
"""
