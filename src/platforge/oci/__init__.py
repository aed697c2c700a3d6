"""OCI content: what an image is made of, and where it is kept on disk.

One concept per module, imported by name (``from platforge.oci.layout import
Layout``); this package re-exports nothing, so importing one module never loads
the codecs of another.

``digest``       content addresses (sha256, sha512) and streaming hashers
``mediatypes``   OCI and Docker media types and what they mean
``content``      descriptors, manifests, indexes, image configs (exact bytes kept)
``layout``       the OCI image layout directory: blobs, ``index.json``, named refs
``archive``      docker-archive and oci-archive tarballs, to and from a layout
``compression``  layer codecs (gzip, zstd) detected by content
``layer``        reproducible layer tars, whiteouts
``unpack``       applying layers to a directory, confined to it
"""
