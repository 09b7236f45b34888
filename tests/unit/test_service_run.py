"""The start/stop sequence every service shares (smsgw.service.ServiceRun), on a real gRPC server."""

from __future__ import annotations

import asyncio

import pytest

from smsgw.grpcx.server import ServiceServer
from smsgw.service import ServiceRun


class Recorder:
    def __init__(self) -> None:
        self.events: list[str] = []

    def closer(self, name: str):
        async def close() -> None:
            self.events.append(name)

        return close


def server() -> ServiceServer:
    return ServiceServer(host="127.0.0.1", port=0, service_names=[])


async def test_serves_until_stopped_then_closes_the_server_first_and_the_rest_newest_first(tmp_path):
    recorder = Recorder()
    grpc_server = server()
    original_stop = grpc_server.stop

    async def stop_server(grace=None):
        recorder.events.append("server")
        await original_stop(grace=grace)

    grpc_server.stop = stop_server
    ready_file = tmp_path / "ready"
    run = ServiceRun("svc", grpc_server, ready_file=str(ready_file))
    await run.start()
    run.on_close(recorder.closer("producer"))
    run.on_close(recorder.closer("consumer"))
    run.on_stopping(recorder.closer("stopping hook"))

    async def worker(stop: asyncio.Event) -> None:
        await stop.wait()
        recorder.events.append("worker done")

    run.watch(worker(run.stop), "worker")
    serving = asyncio.create_task(run.until_stopped())
    while not ready_file.exists():
        await asyncio.sleep(0.01)
    assert ready_file.read_text() == grpc_server.address
    run.stop.set()  # what SIGTERM does
    await serving
    await run.close()
    # The hook and the worker run as the service stops (a signal lets the worker end at once); both
    # before the server, which closes before what its calls use, newest first.
    assert sorted(recorder.events[:2]) == ["stopping hook", "worker done"]
    assert recorder.events[2:] == ["server", "consumer", "producer"]


async def test_a_watched_task_that_fails_stops_the_service_and_the_process_exits_non_zero():
    recorder = Recorder()
    run = ServiceRun("svc", server())
    await run.start()
    run.on_close(recorder.closer("producer"))

    async def failing() -> None:
        await asyncio.sleep(0.05)
        raise ConnectionError("broker gone")

    run.watch(failing(), "loop")
    await asyncio.wait_for(run.until_stopped(), 5)  # returns: the task ended
    with pytest.raises(SystemExit) as exit_info:
        await run.close()
    assert exit_info.value.code == 1 and recorder.events == ["producer"]


async def test_ready_waits_without_deadline_and_says_what_it_waits_for(caplog):
    run = ServiceRun("svc", server(), progress_every=0.05)
    await run.start()
    event = asyncio.Event()
    asyncio.get_running_loop().call_later(0.3, event.set)
    with caplog.at_level("INFO", logger="smsgw.service"):
        await asyncio.wait_for(run.ready(event, "partitions"), 5)
    assert any("waiting for partitions" in message for message in caplog.messages)
    await run.close()


async def test_ready_ends_with_the_error_of_a_watched_task_that_fails_first():
    run = ServiceRun("svc", server())
    await run.start()

    async def failing() -> None:
        raise ConnectionError("no broker")

    run.watch(failing(), "loop")
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(run.ready(asyncio.Event(), "partitions"), 5)
    with pytest.raises(SystemExit):
        await run.close()
