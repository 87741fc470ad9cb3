import { assertEquals } from "@std/assert";
import { ToolCallLimiter } from "../../src/difc/tool_limits.ts";

Deno.test("tool-call-limits: N calls per agent, server and tool; 0 and absent mean unlimited", () => {
  const l = new ToolCallLimiter();
  const limits = { create_issue: 2, list_issues: 0 };
  assertEquals(l.take("a", "gh", "create_issue", limits), null);
  assertEquals(l.take("a", "gh", "create_issue", limits), null);
  assertEquals(
    l.take("a", "gh", "create_issue", limits),
    'tool call limit reached for "create_issue" (max: 2)',
  );
  assertEquals(l.take("b", "gh", "create_issue", limits), null, "other agent has its own budget");
  assertEquals(l.take("a", "other", "create_issue", limits), null, "other server has its own budget");
  for (let i = 0; i < 10; i++) assertEquals(l.take("a", "gh", "list_issues", limits), null);
  assertEquals(l.take("a", "gh", "get_issue", limits), null);
});

Deno.test("tool-call-limits: memory is bounded by evicting the least recently used counter", () => {
  const l = new ToolCallLimiter(2);
  const limits = { t: 1 };
  assertEquals(l.take("a", "s", "t", limits), null);
  assertEquals(l.take("b", "s", "t", limits), null);
  assertEquals(l.take("c", "s", "t", limits), null); // evicts a
  assertEquals(l.take("a", "s", "t", limits), null, "a was evicted, so its count restarted");
  assertEquals(l.take("c", "s", "t", limits), 'tool call limit reached for "t" (max: 1)');
});
