"""Config validation: the shipped configs pass; a typo or a wrong type fails with one line naming the key."""

import pytest
import yaml

from fmextract.config import check_config
from fmextract.errors import InputError


@pytest.fixture
def demo(root):
    with open(root / "config" / "config.yaml") as fh:
        return yaml.safe_load(fh)


def check(cfg, root):
    check_config(cfg, str(root / "config" / "schema.yaml"), source="config/config.yaml")


@pytest.mark.parametrize("name", ["config/config.yaml", "tests/config/tiny.yaml"])
def test_shipped_configs_are_valid(root, name):
    with open(root / name) as fh:
        check(yaml.safe_load(fh), root)


def test_typo_names_the_key(demo, root):
    demo["adaptor"]["d_latnt"] = 10
    with pytest.raises(InputError, match=r"config/config.yaml: unknown key 'd_latnt' under 'adaptor' \(a typo\?\); allowed keys here: .*d_latent"):
        check(demo, root)


def test_wrong_type_names_the_key(demo, root):
    demo["splits"]["n_splits"] = "twelve"
    with pytest.raises(InputError, match=r"key 'splits.n_splits': 'twelve' is not of type 'integer'"):
        check(demo, root)


def test_unknown_method_kind(demo, root):
    demo["methods"]["raw"]["kind"] = "embeding"
    with pytest.raises(InputError, match=r"methods.raw.kind"):
        check(demo, root)
