"""Templates: the root filesystems sandboxes start from, and the registry that finds them by name.

A built template is a directory `<data_dir>/templates/<template_id>/` holding `rootfs/` (owned by the
sandbox uid range, see `sandhive.node.userns`) and `template.json` (`info.TemplateInfo`). `registry`
resolves ids and aliases to the `TemplateImage` a backend runs, building the `base` template on first
use; `base` is that template's recipe (Debian bookworm with Python, Node.js, git, curl, sudo and a
`user` account, like E2B's default template); `layout` is the on-disk protocol every builder follows
(one build at a time per template, built aside and renamed into place).
"""
