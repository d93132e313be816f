"""The Linux-only wing: running a container (namespaces or chroot, rootfs, users).

This __init__ imports nothing Linux-specific, so the rest of the engine imports on any OS.
"""
