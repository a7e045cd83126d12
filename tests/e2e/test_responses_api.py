"""The Responses API as agents speak it: the official `openai` client (`responses.create`, streamed,
`responses.parse`), the OpenAI Agents SDK and LangChain's `ChatOpenAI(use_responses_api=True)`
against a real gateway, with the rules, classifier and LLM tiers answering."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.conftest import ADMIN_KEY, DEMO_KEY, OTHER_KEY, make_config
from tests.servers import gateway_server

pytestmark = pytest.mark.e2e
LOOKUP = {
    "type": "function",
    "name": "lookup_order",
    "description": "Look up an order",
    "parameters": {
        "type": "object",
        "properties": {"order_id": {"type": "string"}},
        "required": ["order_id"],
    },
}


@pytest.fixture()
def gateway(tiered_gateway: str) -> str:
    return tiered_gateway


@pytest.fixture()
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway, api_key=DEMO_KEY, max_retries=0)


def admin(gateway: str, path: str, **params: str) -> Any:
    root = gateway.removesuffix("/v1")
    headers = {"authorization": f"Bearer {ADMIN_KEY}"}
    return httpx.get(f"{root}{path}", params=params, headers=headers).json()


def used_tokens(gateway: str) -> int:
    return int(admin(gateway, "/admin/usage", agent="agent")["windows"][0]["used_tokens"])


def test_rules_and_the_classifier_answer_as_response_objects_without_the_upstream(
    client: openai.OpenAI, simulator: tuple[str, Any]
) -> None:
    before = simulator[1].stats.requests
    raw = client.responses.with_raw_response.create(model="support", input="please reset my password")
    ruled = raw.parse()
    assert raw.headers["x-tiergate-tier"] == "rules"
    assert ruled.output_text == "account_access" and ruled.status == "completed"
    assert ruled.id == f"resp_{raw.headers['x-tiergate-decision-id']}"
    assert ruled.usage is not None and ruled.usage.total_tokens == 0
    raw = client.responses.with_raw_response.create(model="support", input="my card has not arrived yet")
    assert raw.headers["x-tiergate-tier"] == "classifier"
    assert raw.parse().output_text == "card_arrival"
    assert simulator[1].stats.requests == before


def test_an_llm_answer_has_the_same_text_and_usage_as_the_chat_path_and_is_charged_exactly(
    client: openai.OpenAI, gateway: str
) -> None:
    before = used_tokens(gateway)
    response = client.responses.create(
        model="auto", instructions="Answer briefly.", input="Which queue should this go to?"
    )
    chat = client.chat.completions.create(
        model="auto",
        messages=[
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Which queue should this go to?"},
        ],
    )
    assert response.output_text == chat.choices[0].message.content
    assert response.usage is not None and chat.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (
        chat.usage.prompt_tokens,
        chat.usage.completion_tokens,
    )
    assert used_tokens(gateway) - before == response.usage.total_tokens + chat.usage.total_tokens


def test_max_output_tokens_caps_the_answer_and_marks_it_incomplete(client: openai.OpenAI) -> None:
    response = client.responses.create(model="auto", input="Which queue?", max_output_tokens=5)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage is not None and response.usage.output_tokens <= 5


def test_a_stream_has_the_responses_events_and_the_whole_answers_text_and_usage(
    client: openai.OpenAI, gateway: str
) -> None:
    whole = client.responses.create(model="auto", input="Stream me an answer")
    before = used_tokens(gateway)
    events = list(client.responses.create(model="auto", input="Stream me an answer", stream=True))
    kinds = [event.type for event in events]
    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    completed = events[-1].response  # type: ignore[union-attr]
    assert text == whole.output_text == completed.output_text
    assert completed.usage is not None and whole.usage is not None
    assert completed.usage.output_tokens == whole.usage.output_tokens
    assert used_tokens(gateway) - before == completed.usage.total_tokens


class Ticket(BaseModel):
    queue: str
    urgent: bool


def test_structured_output_by_responses_parse(client: openai.OpenAI) -> None:
    parsed = client.responses.parse(model="auto", input="Route this ticket", text_format=Ticket)
    assert isinstance(parsed.output_parsed, Ticket)


def test_a_function_call_and_its_output_make_a_two_turn_exchange(client: openai.OpenAI) -> None:
    first = client.responses.create(model="auto", input="Where is order 42?", tools=[LOOKUP])  # type: ignore[list-item]
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "lookup_order" and call.call_id.startswith("call_")
    assert '"order_id"' in call.arguments
    second = client.responses.create(
        model="auto",
        tools=[LOOKUP],  # type: ignore[list-item]
        input=[
            {"role": "user", "content": "Where is order 42?"},
            {
                "type": "function_call",
                "call_id": call.call_id,
                "name": call.name,
                "arguments": call.arguments,
            },
            {"type": "function_call_output", "call_id": call.call_id, "output": "shipped"},
        ],
    )
    assert second.output_text.startswith("Simulated answer:")
    assert not [item for item in second.output if item.type == "function_call"]


def test_a_streamed_function_call_arrives_in_argument_deltas(client: openai.OpenAI) -> None:
    with client.responses.stream(model="auto", input="Where is order 42?", tools=[LOOKUP]) as stream:  # type: ignore[list-item]
        deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
        final = stream.get_final_response()
    [call] = [item for item in final.output if item.type == "function_call"]
    assert len(deltas) >= 2 and "".join(deltas) == call.arguments


def test_a_stored_response_is_continued_and_retrieved_by_its_own_agent_only(
    client: openai.OpenAI, gateway: str, simulator: tuple[str, Any]
) -> None:
    first = client.responses.create(model="auto", instructions="Be brief.", input="Which queue?")
    second = client.responses.create(model="auto", input="And why?", previous_response_id=first.id)
    assert first.usage is not None and second.usage is not None
    # the second request carried the first turn (its question and answer) upstream
    alone = client.responses.create(model="auto", input="And why?", store=False)
    assert alone.usage is not None
    assert second.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens
    assert second.previous_response_id == first.id
    assert client.responses.retrieve(first.id).output_text == first.output_text
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(alone.id)  # store=False: not kept
    other = openai.OpenAI(base_url=gateway, api_key=OTHER_KEY, max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        other.responses.create(model="auto", input="go on", previous_response_id=first.id)
    assert info.value.body["param"] == "previous_response_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        other.responses.delete(first.id)  # not its own: nothing is deleted
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)


def test_without_a_store_responses_are_not_kept_and_say_why(simulator: tuple[str, Any]) -> None:
    with gateway_server(make_config(simulator[0])) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        kept = client.responses.create(model="auto", input="hi")
        assert kept.store is False  # type: ignore[attr-defined]
        with pytest.raises(openai.NotFoundError) as info:
            client.responses.create(model="auto", input="hi", previous_response_id=kept.id)
        with pytest.raises(openai.NotFoundError) as retrieved:
            client.responses.retrieve(kept.id)
    assert info.value.body["code"] == "store_disabled"  # type: ignore[index]
    assert info.value.body["param"] == "previous_response_id"  # type: ignore[index]
    assert "decision store" in retrieved.value.message


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": []}, "input"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"background": True}, "background"),
        ({"frequency_penalty": 1}, "frequency_penalty"),
        ({"text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format"),
    ],
)
def test_bad_requests_are_400_in_openais_shape_naming_the_parameter(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    request: dict[str, Any] = {"model": "auto", "input": "hi", **extra}
    with pytest.raises(openai.BadRequestError) as info:
        client.post("/responses", body=request, cast_to=httpx.Response)
    assert info.value.body["param"] == param  # type: ignore[index]
    assert info.value.body["type"] == "invalid_request_error"  # type: ignore[index]


def test_a_wrong_key_and_an_exhausted_budget_map_to_the_sdks_exceptions(
    gateway: str, simulator: tuple[str, Any]
) -> None:
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway, api_key="wrong", max_retries=0).responses.create(
            model="auto", input="hi"
        )
    agents = [{"id": "agent", "api_key": DEMO_KEY, "budget": {"tokens_per_day": 60}}]
    with gateway_server(make_config(simulator[0], agents=agents)) as url:
        client = openai.OpenAI(base_url=url, api_key=DEMO_KEY, max_retries=0)
        with pytest.raises(openai.RateLimitError) as info:
            for _ in range(10):
                client.responses.create(model="auto", input="Which queue?")
    assert info.value.body["code"] == "budget_exhausted"  # type: ignore[index]


async def test_an_agents_sdk_agent_runs_its_function_tool_through_the_gateway(gateway: str) -> None:
    set_tracing_disabled(True)
    looked_up: list[str] = []

    @function_tool
    def lookup_order(order_id: str) -> str:
        """Look up an order's status."""
        looked_up.append(order_id)
        return f"order {order_id} has shipped"

    client = openai.AsyncOpenAI(base_url=gateway, api_key=DEMO_KEY, max_retries=0)
    model = OpenAIResponsesModel(model="auto", openai_client=client)
    agent = Agent(name="support", instructions="Help with orders.", tools=[lookup_order], model=model)
    result = await Runner.run(agent, "Where is order 42?")
    assert looked_up == ["example"]  # the simulated model's call, with arguments from the schema
    kinds = [type(item).__name__ for item in result.new_items]
    assert kinds == ["ToolCallItem", "ToolCallOutputItem", "MessageOutputItem"]
    assert result.final_output.startswith("Simulated answer:")
    streamed = Runner.run_streamed(agent, "Where is order 7?")
    async for _ in streamed.stream_events():
        pass
    assert looked_up == ["example", "example"] and streamed.final_output.startswith("Simulated answer:")
    # the cheap tiers answer an agent too
    triage = Agent(name="triage", model=OpenAIResponsesModel(model="support", openai_client=client))
    assert (await Runner.run(triage, "please reset my password")).final_output == "account_access"
    assert (await Runner.run(triage, "my card has not arrived yet")).final_output == "card_arrival"
    await client.close()


def test_langchain_chat_openai_on_the_responses_api(gateway: str) -> None:
    llm = ChatOpenAI(
        model="auto",
        base_url=gateway,
        api_key=DEMO_KEY,
        use_responses_api=True,
        max_retries=0,  # type: ignore[arg-type]
    )
    message = llm.invoke("Which queue?")
    assert message.text.startswith("Simulated answer:")
    assert message.usage_metadata is not None and message.usage_metadata["output_tokens"] > 0
    chunks = list(llm.stream("Which queue?"))
    assert "".join(chunk.text for chunk in chunks) == message.text
    ruled = ChatOpenAI(
        model="support",
        base_url=gateway,
        api_key=DEMO_KEY,
        use_responses_api=True,
        max_retries=0,  # type: ignore[arg-type]
    ).invoke("please reset my password")
    assert ruled.text == "account_access"
