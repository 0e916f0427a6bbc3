"""Fixtures of the family tests: one tiny teacher / student pair per token-level family."""

import pytest
from famtools import SETUPS, Pair, make_pair


@pytest.fixture(params=sorted(SETUPS))
def pair(request, cache_dir) -> Pair:
    return make_pair(request.param, cache_dir)
