"""Which directories make the ``chroma_orch`` package (the rest is in pyproject.toml).

The package's code is under ``src/``; its Alembic migrations are kept at the top-level
``migrations/`` (beside ``alembic.ini``) and ship as ``chroma_orch/migrations`` so an
installed service migrates itself. pyproject.toml's package discovery cannot add a
package from another directory, hence this file.
"""

from setuptools import find_namespace_packages, setup

MIGRATIONS = "chroma_orch.migrations"

setup(
    packages=[*find_namespace_packages("src", include=["chroma_orch*"]), MIGRATIONS],
    package_dir={"": "src", MIGRATIONS: "migrations"},
)
