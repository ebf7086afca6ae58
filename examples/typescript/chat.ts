// A multi-turn chat with the official TypeScript SDK, through the turnkeep gateway.
//
// Each turn sends only the new message (the SDK's message thread); the gateway keeps the conversation durably,
// rebuilds every request with its context policy and cache breakpoints, and accounts the cost to your key.
//
//   turnkeep serve --upstream emulator --port 8788 &
//   export ANTHROPIC_BASE_URL=http://127.0.0.1:8788
//   export ANTHROPIC_API_KEY=$(turnkeep keys create --tenant me)
//   npm install && npm run chat
import Anthropic from '@anthropic-ai/sdk';

const client = new Anthropic(); // ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY: the gateway and your gateway key
const model = process.env.TURNKEEP_MODEL ?? 'claude-sonnet-5';

const thread = client.beta.messages.thread({ model, max_tokens: 300, system: 'You are a concise assistant.' });

function text(message: Anthropic.Beta.BetaMessage): string {
  return message.content.map((block) => (block.type === 'text' ? block.text : '')).join('');
}

for (const question of ['My name is Ada and I live in Paris.', 'What is my name?', 'Where do I live?']) {
  const reply = await thread.send({ role: 'user', content: question });
  console.log(`> ${question}`);
  console.log(text(reply));
}

// The last turn, streamed.
const stream = thread.stream({ role: 'user', content: 'What is my name?' });
process.stdout.write('> What is my name? (streamed)\n');
stream.on('text', (piece) => process.stdout.write(piece));
await stream.finalMessage();
process.stdout.write('\n');
