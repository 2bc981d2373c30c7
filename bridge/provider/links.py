"""The "Azure ML Studio" button on a submitting task: a link to its job's page in Studio.

The operator pushes the job's Studio URL as XCom `studio_url` when it sends the submission. In
Airflow 3 the task runner, once `execute` returns, calls `get_link` and stores the answer as the
link's own XCom (`_link_AzureMLStudioLink`), which the API server reads without running operator
code. So the button leads to the job from the moment the task has sent it, even while it runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperatorLink

if TYPE_CHECKING:
    from airflow.models.taskinstancekey import TaskInstanceKey

STUDIO_URL_XCOM_KEY = "studio_url"


class AzureMLStudioLink(BaseOperatorLink):  # type: ignore[misc,unused-ignore]
    """Azure ML Studio's page of the job a `SubmitAzureMLJobOperator` task submitted."""

    name = "Azure ML Studio"

    def get_link(self, operator: Any, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        url = XCom.get_value(ti_key=ti_key, key=STUDIO_URL_XCOM_KEY)
        return str(url) if url else ""
