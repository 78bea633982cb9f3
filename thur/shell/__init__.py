"""`thurvtl shell` / `thurvsa shell`: a targetcli-style interactive shell.

Built on configshell-fb (the library targetcli uses): a tree of nodes to `cd`
through and `ls`, with per-node commands, `get`/`set` parameter groups and tab
completion. Every node reads and changes the daemon through the same admin
socket and verbs as the CLIs (thur/admin.py), so the shell can do nothing the
admin API does not allow, and every change it makes is audited like a CLI one.

base.py holds the connection, the shell and the node kinds; vtl.py and vsa.py
the two trees.
"""
