// longctx serve with the official OpenAI client (npm `openai`): completions, chat, streaming,
// n > 1, and errors surfacing as the client's typed exceptions.
// Usage: node openai_client.test.mjs BASE_URL MODEL API_KEY   (run by tests/test_server.cpp)
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const [baseURL, model, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });

const models = await client.models.list();
assert.equal(models.data[0].id, model);

// Completions: greedy is deterministic, usage adds up.
const c1 = await client.completions.create({ model, prompt: 'The jury said', max_tokens: 8, temperature: 0 });
const c2 = await client.completions.create({ model, prompt: 'The jury said', max_tokens: 8, temperature: 0 });
assert.equal(c1.object, 'text_completion');
assert.equal(c1.choices.length, 1);
assert.equal(typeof c1.choices[0].text, 'string');
assert.ok(['stop', 'length'].includes(c1.choices[0].finish_reason));
assert.equal(c1.choices[0].text, c2.choices[0].text);
assert.ok(c1.usage.completion_tokens >= 0 && c1.usage.completion_tokens <= 8);  // EOS may come first
assert.equal(c1.usage.total_tokens, c1.usage.prompt_tokens + c1.usage.completion_tokens);

// n > 1: one choice per index.
const many = await client.completions.create({ model, prompt: 'Hello', max_tokens: 6, n: 4, temperature: 1, seed: 5 });
assert.deepEqual(many.choices.map((c) => c.index).sort(), [0, 1, 2, 3]);

// Streaming gives the same text as the same seeded request without streaming.
const whole = await client.completions.create({ model, prompt: 'Hello', max_tokens: 12, temperature: 1, seed: 9 });
const stream = await client.completions.create({ model, prompt: 'Hello', max_tokens: 12, temperature: 1, seed: 9, stream: true });
let streamed = '';
let finish = null;
for await (const chunk of stream) {
  streamed += chunk.choices[0].text;
  finish = chunk.choices[0].finish_reason ?? finish;
}
assert.equal(streamed, whole.choices[0].text);
assert.equal(finish, whole.choices[0].finish_reason);

// Chat, plain and streamed with n = 2.
const chat = await client.chat.completions.create({
  model, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi there' }],
  max_tokens: 8, temperature: 0,
});
assert.equal(chat.object, 'chat.completion');
assert.equal(chat.choices[0].message.role, 'assistant');
assert.equal(typeof chat.choices[0].message.content, 'string');
const cs = await client.chat.completions.create({
  model, messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi there' }], max_tokens: 6, n: 2, temperature: 0, stream: true,
});
const texts = ['', ''];
let finished = 0;
for await (const chunk of cs) {
  for (const ch of chunk.choices) {
    if (ch.delta?.content) texts[ch.index] += ch.delta.content;
    if (ch.finish_reason) finished++;
  }
}
assert.equal(finished, 2);
assert.equal(texts[0], texts[1]);  // greedy: both samples agree
assert.equal(texts[0], chat.choices[0].message.content.slice(0, texts[0].length));

// Errors arrive as the client's typed exceptions with OpenAI-style bodies.
await assert.rejects(client.completions.create({ model: 'no-such-model', prompt: 'x' }),
  (e) => e instanceof OpenAI.NotFoundError && e.code === 'model_not_found');
await assert.rejects(client.completions.create({ model, prompt: 'x', max_tokens: 0 }),
  (e) => e instanceof OpenAI.BadRequestError && e.param === 'max_tokens');
const anon = new OpenAI({ baseURL, apiKey: 'wrong', maxRetries: 0 });
await assert.rejects(anon.models.list(), (e) => e instanceof OpenAI.AuthenticationError);

console.log('openai client: all checks passed');
