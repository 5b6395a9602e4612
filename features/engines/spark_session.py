"""Starting the SparkSession the Spark engine runs on: Java, the master, the Python workers.

Everything here happens on the driver before a job runs; the job itself (reading the log,
grouping it by buyer partition, validating and building in each group) is
`features.engines.spark`.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from features.engines import DEFAULT_MASTER, EngineUnavailable

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

SPARK_EXTRA = "Spark engine needs the spark extra: pip install -e '.[spark]'"
MIN_JAVA = 17
MASTER_TIMEOUT_S = 60.0
# PySpark 4 warns on every pandas 3 import that pandas 3 is "not fully supported". The
# engine's parity tests check, column by column, what it uses (Arrow in and out of each group,
# pandas inside); the warning is silenced by its message only, nothing else.
_PANDAS3_WARNING = "PySpark does not yet fully support pandas"


class SparkJobError(RuntimeError):
    """A Spark job failed for a reason other than the log's contract."""


@contextmanager
def quiet_pandas3_warning() -> Iterator[None]:
    """Silence PySpark's "pandas 3 not fully supported" warning, and only it, in the block."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_PANDAS3_WARNING, category=FutureWarning)
        yield


def find_java() -> str:
    """The java that Spark will start: $JAVA_HOME/bin/java, else `java` on PATH.

    Raises:
        EngineUnavailable: None, or one older than Java 17.
    """
    home = os.environ.get("JAVA_HOME")
    if home:
        java = str(Path(home) / "bin" / "java")
        if not os.access(java, os.X_OK):
            raise EngineUnavailable(
                f"Spark engine needs Java {MIN_JAVA}+: JAVA_HOME={home} has no bin/java; "
                "fix JAVA_HOME or unset it to use the java on PATH"
            )
    else:
        found = shutil.which("java")
        if found is None:
            raise EngineUnavailable(
                f"Spark engine needs Java {MIN_JAVA}+: no java on PATH and JAVA_HOME is not "
                "set; install one (e.g. apt-get install openjdk-17-jre-headless)"
            )
        java = found
    probe = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', probe.stderr + probe.stdout)
    major = int(match.group(1)) if match else 0
    if major == 1 and match and match.group(2):  # "1.8.0_392" is Java 8
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise EngineUnavailable(
            f"Spark engine needs Java {MIN_JAVA}+; {java} is "
            f"{'unreadable' if not match else f'Java {major}'}: install a newer one or point "
            "JAVA_HOME at it"
        )
    return java


def check_master(master: str, timeout_s: float = 10.0) -> None:
    """Refuse a standalone master (spark://host:port[,host:port]) that nothing answers at.

    Spark itself would retry for a minute and then wait for executors for ever.

    Raises:
        EngineUnavailable: No listed master accepts a connection.
    """
    if not master.startswith("spark://"):
        return
    errors = []
    for address in master.removeprefix("spark://").split(","):
        host, _, port = address.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=timeout_s):
                return
        except (OSError, ValueError) as exc:
            errors.append(f"{address}: {exc}")
    raise EngineUnavailable(f"Spark master {master} cannot be reached ({'; '.join(errors)})")


def _wait_for_executor(spark: SparkSession, master: str, deadline: float) -> None:
    status = spark.sparkContext._jsc.sc().getExecutorMemoryStatus()  # the driver counts as one
    while status.size() < 2:
        if time.monotonic() > deadline:
            spark.stop()
            raise EngineUnavailable(
                f"Spark master {master} gave this application no executor within "
                f"{MASTER_TIMEOUT_S:.0f} s: are its workers up, with free cores and memory?"
            )
        time.sleep(0.5)
        status = spark.sparkContext._jsc.sc().getExecutorMemoryStatus()


def spark_session(master: str = DEFAULT_MASTER, app_name: str = "fastrefund") -> SparkSession:
    """Start (or join) the SparkSession the engine runs on.

    The Python workers run this interpreter (sys.executable: the project's venv), whatever
    PYSPARK_PYTHON says; on a cluster the project must be installed at that path on every
    node. Executor memory, cores and the like come from Spark's own configuration
    (spark-defaults.conf in $SPARK_CONF_DIR): see docs/spark.md.

    Raises:
        EngineUnavailable: pyspark or Java is missing, or the master cannot be reached
            within MASTER_TIMEOUT_S.
    """
    started = time.monotonic()
    try:
        with quiet_pandas3_warning():
            from pyspark.sql import SparkSession
    except ImportError as exc:
        raise EngineUnavailable(SPARK_EXTRA) from exc
    find_java()
    check_master(master)
    os.environ["PYSPARK_PYTHON"] = sys.executable  # what PySpark starts its workers with
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    builder = (
        SparkSession.builder.master(master)
        .appName(app_name)
        .config("spark.pyspark.python", sys.executable)
        .config("spark.pyspark.driver.python", sys.executable)
        .config("spark.executorEnv.PYTHONWARNINGS", f"ignore:{_PANDAS3_WARNING}:FutureWarning")
        .config("spark.ui.showConsoleProgress", "false")
    )
    try:
        with quiet_pandas3_warning():
            spark = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: PySpark says why on its first line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise EngineUnavailable(f"Spark did not start with master {master}: {first}") from exc
    spark.sparkContext.setLogLevel("ERROR")
    if master.startswith("spark://"):
        _wait_for_executor(spark, master, started + MASTER_TIMEOUT_S)
    return spark


# ---------------------------------------------------------------- reading the log
