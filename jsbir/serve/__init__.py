"""Draw and search: a local web page where a person sketches (or uploads a sketch) and sees the retrieved photos.

``python -m jsbir.main serve --index DIR`` loads a retrieval index and its model once (:mod:`jsbir.serve.engine`,
the only module that imports :mod:`jsbir.retrieval`) and serves the page and a small JSON API
(:mod:`jsbir.serve.app`), validating every request (:mod:`jsbir.serve.limits`). ``docs/serve.md`` describes it.
"""
