#!/usr/bin/env python3
"""Generates src/schemas.rs: the input schema of every catalogue tool (the shape of the GitHub MCP
server's tools/list answer), which label_resource checks tool_args against. Run from this folder."""
import re

ARGS = {
    "owner": ("string", "Repository owner: the user or organization that owns the repository."),
    "repo": ("string", "Repository name, or owner/name; the guard resolves its visibility through get_repo."),
    "issue_number": ("number", "The number that identifies the issue within its repository."),
    "pull_number": ("number", "The number that identifies the pull request within its repository."),
    "path": ("string", "Path of the file or directory, relative to the repository root, without a leading slash."),
    "branch": ("string", "Branch name; the repository's default branch when omitted."),
    "ref": ("string", "A git reference: branch, tag or commit SHA; the default branch when omitted."),
    "sha": ("string", "Commit SHA, full or abbreviated to at least seven hexadecimal characters."),
    "query": ("string", "Search query in GitHub's search syntax, qualifiers such as repo:, is:, label: allowed."),
    "page": ("number", "Page number of the results to fetch, starting at 1 (pagination)."),
    "perPage": ("number", "Results per page for pagination, between 1 and 100."),
    "state": ("string", "Filter by state: open, closed or all."),
    "labels": ("array", "Label names to filter by, or to set; each label must exist in the repository."),
    "title": ("string", "Title of the issue, pull request, release or discussion."),
    "body": ("string", "Body text in GitHub-flavoured Markdown; mentions and references are rendered."),
    "message": ("string", "Commit message for the change, first line at most 72 characters recommended."),
    "content": ("string", "File content, UTF-8 text; binary files are not supported by this tool."),
    "head": ("string", "The branch that holds the changes (for a fork: owner:branch)."),
    "base": ("string", "The branch the changes are merged into."),
    "run_id": ("number", "The unique identifier of the workflow run."),
    "job_id": ("number", "The unique identifier of the workflow job."),
    "workflow_id": ("string", "The workflow file name (for example ci.yml) or its numeric identifier."),
    "alertNumber": ("number", "The number that identifies the alert within its repository."),
    "org": ("string", "Organization login; case-insensitive."),
    "username": ("string", "User login; case-insensitive."),
    "tag": ("string", "Tag name, for example v1.2.3."),
    "since": ("string", "Only items updated at or after this time (ISO 8601 timestamp)."),
    "sort": ("string", "Sort field, for example created, updated or comments."),
    "direction": ("string", "Sort direction: asc or desc."),
    "discussionNumber": ("number", "The number that identifies the discussion within its repository."),
    "gist_id": ("string", "The identifier of the gist."),
    "project_number": ("number", "The project's number within its owner."),
    "item_id": ("number", "The identifier of the project item."),
    "notificationID": ("string", "The identifier of the notification thread."),
    "method": ("string", "What to do: the tool's sub-operation, one of the values it lists."),
    "event": ("string", "Review action: APPROVE, REQUEST_CHANGES or COMMENT."),
    "files": ("array", "Files to push, each an object with path and content."),
    "name": ("string", "Name of the new resource (repository, branch, label)."),
    "description": ("string", "Short description shown next to the resource."),
    "private": ("boolean", "Whether the new repository is private."),
    "color": ("string", "Label colour as six hexadecimal digits without the leading #."),
}

def pick(tool):
    req, opt = [], ["page", "perPage"] if tool.startswith(("list_", "search_")) else []
    if tool.startswith("search_"):
        req.append("query"); opt += ["sort", "direction"]
    elif tool not in ("get_me", "list_notifications", "mark_all_notifications_read", "list_gists", "create_gist",
                      "list_global_security_advisories", "get_global_security_advisory", "list_starred_repositories"):
        if any(k in tool for k in ("org_", "project", "team")):
            req.append("org")
        else:
            # "repo" may carry "owner/name" (the demo upstream's form), so "owner" is optional.
            req.append("repo"); opt.insert(0, "owner")
    for key, args in [("issue", ["issue_number"]), ("pull_request", ["pull_number"]), ("file", ["path"]),
                      ("workflow_run", ["run_id"]), ("job", ["job_id"]), ("alert", ["alertNumber"]),
                      ("discussion", ["discussionNumber"]), ("gist", ["gist_id"]), ("project_item", ["item_id"]),
                      ("notification", ["notificationID"]), ("release_by_tag", ["tag"]), ("tag", ["tag"]),
                      ("commit", ["sha"]), ("label", ["name"])]:
        if key in tool and (tool.startswith(("get_", "update_", "delete_", "merge_", "add_", "dismiss_", "rerun_",
                                             "cancel_", "submit_", "create_pending", "request_", "download_"))
                            or key in ("issue", "pull_request") and "comment" in tool):
            req += [a for a in args if a not in req]
    if tool.startswith("create_issue") or tool == "create_pull_request" or tool == "create_gist":
        req.append("title"); opt += ["body", "labels"]
    if tool == "create_pull_request":
        req += ["head", "base"]
    if tool in ("create_or_update_file", "delete_file", "push_files"):
        req += ["branch", "message"]; opt += ["sha"]
        if tool == "create_or_update_file": req += ["path", "content"]
        if tool == "push_files": req.append("files")
    if tool.startswith("list_"):
        opt += ["state", "sort", "direction", "since"]
    if "labels" not in opt and "issue" in tool:
        opt.append("labels")
    if tool == "create_repository":
        req.append("name"); opt += ["description", "private"]
    if tool.startswith("create_label") or tool.startswith("update_label"):
        opt += ["color", "description"]
    if "review" in tool:
        opt += ["event", "body"]
    return req, [o for o in dict.fromkeys(opt) if o not in req]

def schema(tool, req, opt):
    props = []
    for a in req + opt:
        t, d = ARGS[a]
        item = ',"items":{"type":"string"}' if t == "array" else ""
        props.append(f'"{a}":{{"type":"{t}","description":"{d}"{item}}}')
    words = tool.replace("_", " ")
    desc = (f"{words[0].upper()}{words[1:]} on GitHub. The guard labels the call from the repository's visibility "
            f"and the policy's scopes; arguments outside this schema make the call count as a write.")
    r = ",".join(f'"{a}"' for a in req)
    return f'{{"description":"{desc}","type":"object","properties":{{{",".join(props)}}},"required":[{r}],"additionalProperties":false}}'

tools = re.findall(r'name: "([a-z_]+)"', open("src/catalog.rs").read())
out = ["//! Generated by gen_schemas.py: the input schema of every catalogue tool, sorted by name.", "",
       "pub static SCHEMAS: &[(&str, &str)] = &["]
for t in sorted(tools):
    req, opt = pick(t)
    js = schema(t, req, opt).replace("\\", "\\\\").replace('"', '\\"')
    out.append(f'    ("{t}", "{js}"),')
out.append("];")
open("src/schemas.rs", "w").write("\n".join(out) + "\n")
print(len(tools), "tools", sum(len(schema(t, *pick(t))) for t in tools), "bytes of schema")
