"""Where each watsonx.ai request goes, and how it is scoped: the protocol's §1 and §2 in one table.

watsonx.ai answers on two hosts: the ML host (`https://us-south.ml.cloud.ibm.com`) for
trainings, deployments, model specs and generation, and the data-platform host
(`https://api.dataplatform.cloud.ibm.com`) for projects, spaces and data assets. Every
endpoint also has its own rule for where the project/space id goes (query, body, both or
nowhere) and whether it takes the `version` date. Resource code names an `Endpoint`; the
transport applies its rules, so no call site repeats them.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from granite_tuner.backends.base import check_id

__all__ = [
    "API_VERSION",
    "DEFAULT_IAM_URL",
    "PLATFORM_URLS",
    "Endpoint",
    "Scope",
    "platform_url_for",
]

#: The `version` date sent with every versioned call; the value IBM's SDK 1.8.1 sends.
#: The service accepts any date at or after its minimum, so a client may pin its own.
API_VERSION = "2026-10-14"

DEFAULT_IAM_URL = "https://iam.cloud.ibm.com/identity/token"


def _with_private(pairs: dict[str, str]) -> dict[str, str]:
    """Each IBM Cloud region also answers on a `private.` host with a `private.` platform."""
    table = dict(pairs)
    for ml, platform in pairs.items():
        table[ml.replace("https://", "https://private.", 1)] = platform.replace(
            "https://", "https://private.", 1
        )
    return table


#: ML host -> data-platform host, as IBM publishes them per region.
PLATFORM_URLS: MappingProxyType[str, str] = MappingProxyType(
    {
        **_with_private(
            {
                "https://us-south.ml.cloud.ibm.com": "https://api.dataplatform.cloud.ibm.com",
                "https://eu-de.ml.cloud.ibm.com": "https://api.eu-de.dataplatform.cloud.ibm.com",
                "https://eu-gb.ml.cloud.ibm.com": "https://api.eu-gb.dataplatform.cloud.ibm.com",
                "https://jp-tok.ml.cloud.ibm.com": "https://api.jp-tok.dataplatform.cloud.ibm.com",
                "https://au-syd.ml.cloud.ibm.com": "https://api.au-syd.dai.cloud.ibm.com",
                "https://ca-tor.ml.cloud.ibm.com": "https://api.ca-tor.dai.cloud.ibm.com",
            }
        ),
        # AWS-hosted regions map their private hosts to the public platform.
        "https://ap-south-1.aws.wxai.ibm.com": "https://api.ap-south-1.aws.data.ibm.com",
        "https://private.ap-south-1.aws.wxai.ibm.com": "https://api.ap-south-1.aws.data.ibm.com",
        "https://us-east-1.aws.wxai.ibm.com": "https://api.us-east-1.aws.data.ibm.com",
        "https://private.us-east-1.aws.wxai.ibm.com": "https://api.us-east-1.aws.data.ibm.com",
        "https://wxai.ibmforusgov.com": "https://api.dai.ibmforusgov.com",
    }
)


def platform_url_for(ml_url: str) -> str | None:
    """The data-platform host for a known ML host, or None (Cloud Pak, a fake, a proxy)."""
    parts = urlsplit(ml_url)
    return PLATFORM_URLS.get(f"{parts.scheme}://{parts.netloc}".lower())


@dataclass(frozen=True)
class Scope:
    """The project or space every request works in."""

    kind: Literal["project", "space"]
    id: str

    @property
    def field(self) -> str:
        """`project_id` or `space_id`: the key the protocol uses in query and body."""
        return f"{self.kind}_id"

    def as_dict(self) -> dict[str, str]:
        return {self.field: self.id}


ScopeRule = Literal["query", "body", "both", "none"]


@dataclass(frozen=True)
class Endpoint:
    """One watsonx.ai endpoint: its host role, path template and protocol rules."""

    host: Literal["ml", "platform"]
    path: str
    scope: ScopeRule = "query"
    versioned: bool = True
    #: Counted against the service's request rate (text generation is).
    rate_limited: bool = False

    def format_path(self, **path_params: str) -> str:
        """The path with each id checked and encoded, so it stays one path segment."""
        return self.path.format(
            **{name: quote(check_id(value, name), safe="") for name, value in path_params.items()}
        )

    def query(self, scope: Scope, api_version: str, extra: dict[str, Any] | None) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.versioned:
            params["version"] = api_version
        if self.scope in ("query", "both"):
            params.update(scope.as_dict())
        if extra:
            params.update({k: v for k, v in extra.items() if v is not None})
        return params

    def body(self, scope: Scope, body: dict[str, Any] | None) -> dict[str, Any] | None:
        if body is None or self.scope not in ("body", "both"):
            return body
        return {**body, **scope.as_dict()}


# --- the table -------------------------------------------------------------------------------
# Platform host: projects, spaces, data assets.
PROJECT = Endpoint("platform", "/v2/projects/{project_id}", scope="none", versioned=False)
SPACE = Endpoint("platform", "/v2/spaces/{space_id}", scope="none", versioned=False)
ASSETS = Endpoint("platform", "/v2/assets")
ASSET = Endpoint("platform", "/v2/assets/{asset_id}")
ASSET_SEARCH = Endpoint("platform", "/v2/asset_types/data_asset/search")
ASSET_ATTACHMENTS = Endpoint("platform", "/v2/assets/{asset_id}/attachments")
ASSET_ATTACHMENT = Endpoint("platform", "/v2/assets/{asset_id}/attachments/{attachment_id}")
ASSET_ATTACHMENT_COMPLETE = Endpoint(
    "platform", "/v2/assets/{asset_id}/attachments/{attachment_id}/complete"
)
# ML host: model specs, trainings, deployments, generation.
MODEL_SPECS = Endpoint("ml", "/ml/v1/foundation_model_specs")
TRAININGS = Endpoint("ml", "/ml/v4/trainings")
TRAINING_CREATE = Endpoint("ml", "/ml/v4/trainings", scope="body")
TRAINING = Endpoint("ml", "/ml/v4/trainings/{training_id}")
DEPLOYMENTS = Endpoint("ml", "/ml/v4/deployments")
DEPLOYMENT_CREATE = Endpoint("ml", "/ml/v4/deployments", scope="both")
DEPLOYMENT = Endpoint("ml", "/ml/v4/deployments/{deployment_id}")
TEXT_GENERATION = Endpoint("ml", "/ml/v1/text/generation", scope="body", rate_limited=True)
DEPLOYMENT_TEXT_GENERATION = Endpoint(
    "ml", "/ml/v1/deployments/{deployment_id}/text/generation", scope="none", rate_limited=True
)
