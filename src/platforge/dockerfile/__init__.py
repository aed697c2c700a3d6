"""The Dockerfile frontend: it reads Dockerfiles and plans builds; it runs nothing.

* ``parser``: text to instructions (directives, continuations, JSON and shell forms,
  flags, here-documents, ``ONBUILD``), with BuildKit's syntax-tree dump.
* ``shell``: the word expansion and splitting instructions apply to their words.
* ``plan``: stages, build args and automatic platform args resolved per target
  platform, with stage keys that show which stages every platform shares.
* ``dockerignore``: which files of the build context a build leaves out.

Typical use::

    from platforge import platforms
    from platforge.dockerfile import parser, plan

    dockerfile = parser.parse(path.read_text(), filename=str(path))
    wanted = platforms.parse_list("linux/amd64,linux/arm64")
    multi = plan.resolve_all(dockerfile, wanted)
"""
