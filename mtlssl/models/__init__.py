"""Models: backbones (images -> every stage's feature map), task heads, and multi-task architectures behind one
contract (``arch.MultiTaskArchitecture``) that the engine talks to. ``build.build_model(spec)`` rebuilds any
of them from plain data."""
