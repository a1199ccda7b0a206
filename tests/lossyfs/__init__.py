"""A lossy filesystem for power-loss tests: `fs.LossyFS` (the FUSE operations), `mount.Mount` (a mounted
instance in a child process, cut and unmounted by the test). Imports: nothing of the project."""
