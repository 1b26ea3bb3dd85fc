"""Root filesystem images Sandhive builds on the host.

`system_image` is the read-only directory that carries envd and its own Python runtime into every
sandbox, so a template's rootfs needs nothing of ours (not even Python). `apt_sources` reads the
host's Debian mirrors, which every image build must use instead of a hard-coded one.
"""
