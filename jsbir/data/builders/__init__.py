"""tensorflow-datasets builders, one file per dataset family.

``synthetic_sbir`` renders the procedural set; the others read a manual folder the user points ``config.data.root``
at (nothing is downloaded), sharing ``manual``: ``sketchy`` (Sketchy-Extended and the generic ``folder`` layout),
``tuberlin`` (TU-Berlin-Extended), ``quickdraw`` (QuickDraw-Extended), ``quickdraw_raw`` (Google's per-class
``.npy`` / ``.ndjson`` files) and ``qmul`` (QMUL Shoe/Chair V1 and V2).
"""
