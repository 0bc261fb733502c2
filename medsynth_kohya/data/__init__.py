"""Data stage: an ISIC download -> selected rows -> checked, measured images -> manifest -> layout.

`fetch` downloads through isic-cli; `sources` finds and reads either ISIC metadata layout;
`images` checks and measures each photo once (`hair` is the detector); `captions` writes the
caption text; `manifest` owns `manifest.csv`; `layout` owns kohya's `img/<R>_<class>/` folders;
`split` keeps patients on one side; `prepare` runs them in that order; `prepared` names the
prepared folder's files and reads its state for later stages; `synth` makes ISIC-like demo and
test data. Nothing here knows sd-scripts beyond the folder layout it reads.
"""
