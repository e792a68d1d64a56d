"""The supervision tree: OTP-style supervisors over thespian actors.

``spec`` (pure restart logic), ``supervisor`` (generic supervisor actor),
``tree`` (root, cache supervisor), ``models`` (the model
supervisor with crash bookkeeping), ``runtime`` (loopback-only start,
attach and stop; the ``serve`` daemon), ``messages``.
"""
