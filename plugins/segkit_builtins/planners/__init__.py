"""The built-in planner (``segkit plan --planner default``) and its pure helpers."""
