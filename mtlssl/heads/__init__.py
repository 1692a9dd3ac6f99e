"""Task heads: builders ``factory(in_dim, out_dim) -> nn.Module`` (``linear.linear``, ``mlp.mlp``).

One head per task."""
