// Raw secrets just created, held in memory for the one page that shows them; taking one forgets it. Never
// stored in sessionStorage, localStorage or the URL, so navigating away and back cannot show it again.
const held = new Map();

export function keepOnce(id, secret) { held.set(id, secret); }

export function takeOnce(id) {
  const secret = held.get(id);
  held.delete(id);
  return secret;
}
