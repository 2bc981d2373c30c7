"""The Azure ML Studio buttons on the bridge's tasks: the job, the model, the endpoint.

An operator pushes each page's URL as an XCom (`studio_url`, `model_url`, `endpoint_url`) when it
sends its submission. In Airflow 3 the task runner, once `execute` returns, calls `get_link` and
stores the answer as the link's own XCom (`_link_<class name>`), which the API server reads
without running operator code. So each button leads to its page from the moment the task has sent
the submission, even while Azure ML works on it. A URL pushed as None (no workspace id, or a model
version Azure ML has not chosen yet) shows no button.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey

STUDIO_URL_XCOM_KEY = "studio_url"
MODEL_URL_XCOM_KEY = "model_url"
ENDPOINT_URL_XCOM_KEY = "endpoint_url"


class _PushedLink(BaseOperatorLink):  # type: ignore[misc,unused-ignore]
    """A Studio page whose URL the operator pushed as XCom `url_key`."""

    # Not `xcom_key`: BaseOperatorLink's, where the task runner stores the link itself.
    url_key: ClassVar[str]

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        url = XCom.get_value(ti_key=ti_key, key=self.url_key)
        return str(url) if url else ""


class AzureMLStudioLink(_PushedLink):
    """Azure ML Studio's page of the job the task submitted (or a batch scoring's job, or the job
    it canceled)."""

    name = "Azure ML Studio"
    url_key = STUDIO_URL_XCOM_KEY


class AzureMLModelLink(_PushedLink):
    """The model version the task registers, deploys or shares (in the registry it goes to)."""

    name = "Azure ML model"
    url_key = MODEL_URL_XCOM_KEY


class AzureMLEndpointLink(_PushedLink):
    """The online endpoint the task deploys to or shifts traffic on."""

    name = "Azure ML endpoint"
    url_key = ENDPOINT_URL_XCOM_KEY


LINKS = (AzureMLStudioLink, AzureMLModelLink, AzureMLEndpointLink)
