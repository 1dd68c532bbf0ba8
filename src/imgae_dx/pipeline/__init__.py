"""What the DVC stages do, one module per stage so that each stage depends on its own code.

``stages/<name>.py`` are thin entry points that call ``imgae_dx.pipeline.<name>.<name>``.
"""
