# The flows' image, run by prefect-azure's Azure Container Instances worker (the mlops-aci pool,
# infra/prefect/README.md): the locked dependencies, then this repository as an editable install
# in /opt/mlops, so backends.topology.REPO_ROOT is the WORKDIR and components/, config/ and
# infra/ are read from there (the azure deployments' pull step changes into /opt/mlops too).
# The worker sets the container's command, `prefect flow-run execute`: no ENTRYPOINT here.
# No Bicep CLI or checkov: the infra flow needs an identity that may write role assignments, so
# it runs where a person or CI signs in (the process pool), never under the flows identity.
# Names and IDs come from the topology (the Prefect Variable `mlops config push` writes) and
# credentials from the container group's managed identity: nothing secret is in the image.
#   docker build --build-arg GIT_COMMIT=$(git rev-parse HEAD) \
#     -t crreadmissionflows.azurecr.io/readmission-flows:latest .
#   az acr login -n crreadmissionflows && docker push crreadmissionflows.azurecr.io/readmission-flows:latest
FROM python:3.11-slim

ARG GIT_COMMIT=unknown

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLOPS_GIT_COMMIT=${GIT_COMMIT} \
    MLOPS_ROOT=/var/lib/mlops

WORKDIR /opt/mlops

# Dependencies first: this layer changes only with the lock files. pip compiles every module to
# bytecode as it installs (importing the stack without .pyc files takes twice as long).
COPY requirements.lock ./
RUN pip install --compile -r requirements.lock

# The code the flows run and read at runtime.
COPY pyproject.toml environments.yaml prefect.yaml ./
COPY audit/ audit/
COPY backends/ backends/
COPY components/ components/
COPY config/ config/
COPY data_checks/ data_checks/
COPY flows/ flows/
COPY infra/ infra/
COPY mlops_cli/ mlops_cli/
COPY monitoring/ monitoring/
COPY records/ records/
COPY reports/ reports/
COPY settings/ settings/
COPY synthetic_data/ synthetic_data/
COPY tasks/ tasks/
RUN pip install --no-deps -e . \
 && python -m compileall -q audit backends components data_checks flows mlops_cli monitoring \
    records reports settings synthetic_data tasks

# Not root: the code is read-only to the flows; they write only under MLOPS_ROOT and $HOME
# (Prefect's own files).
RUN useradd --create-home --uid 10001 mlops \
 && install -d -o mlops -g mlops "$MLOPS_ROOT"
USER mlops
