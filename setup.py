"""Build hook for the optional compiled part of the spool writer (edge_runtime/spool/_rows.c).

Everything else is in pyproject.toml. Where no C compiler is available the extension is
skipped (``optional=True``) and the spool uses its pure-Python row loop, which produces the
same bytes; the spool's figures (``extra["compiled_rows"]``) and the spool bench say which
one is in use.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "edge_runtime.spool._rows",
            sources=["edge_runtime/spool/_rows.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "edge_runtime.spool._txn",
            sources=["edge_runtime/spool/_txn.c"],
            extra_compile_args=["-O2"],
            libraries=["dl", "pthread"],
            optional=True,
        ),
    ]
)
