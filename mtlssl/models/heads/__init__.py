"""Task heads: builders ``factory(in_dim, out_dim) -> nn.Module`` (``linear.linear``, ``mlp.mlp``), one head
per task; a config in ``conf/heads/`` names one."""
