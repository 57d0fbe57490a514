#!/usr/bin/env python3
"""The CloudFormation a deploy of template.yaml would create, as JSON, for chosen parameter values.

    scripts/cfn_template.py [--template template.yaml] [Key=Value ...]
    scripts/cfn_template.py --sets '[{"ScheduleEnabled": "false"}, {}]' [Key=Value ...]

Runs the template's transforms offline, in order: AWS::LanguageExtensions (the SAM CLI's
implementation) and the SAM transform (samtranslator, the library CloudFormation's
AWS::Serverless-2016-10-31 transform is built on); then does what CloudFormation does
next with the parameter values: evaluates `Conditions`, drops resources whose condition is false,
picks `Fn::If` branches, removes `AWS::NoValue`, substitutes parameters and pseudo parameters in
`Ref`, `Fn::Sub` and `Fn::Join`. What only exists once deployed (a resource's `Ref`, `Fn::GetAtt`,
`${Resource.Attr}`) stays as the intrinsic, so a reader can still see what points at what.

Prints {"Parameters": {name: {definition…, "Value": resolved}}, "Conditions": {name: bool},
"Resources": {…}, "Outputs": {…}}. The tests in tests/api/template.rs read it; so does
`scripts/local_lambda.py artifact` for the function's environment. Needs no AWS account: the
region is us-east-1, the account 123456789012, the stack `batch-processor`.
"""

import argparse
import copy
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PSEUDO = {
    "AWS::Region": "us-east-1",
    "AWS::AccountId": "123456789012",
    "AWS::Partition": "aws",
    "AWS::StackName": "batch-processor",
    "AWS::StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/batch-processor/0",
    "AWS::URLSuffix": "amazonaws.com",
}


class NoValue:
    """`AWS::NoValue`: the key or list item disappears."""


class TemplateError(Exception):
    pass


def transform(template: dict, params: dict) -> dict:
    os.environ.setdefault("AWS_DEFAULT_REGION", PSEUDO["AWS::Region"])
    from samtranslator.internal.managed_policies import get_bundled_managed_policy_map
    from samtranslator.translator.transform import transform as sam_transform

    class BundledPolicies:
        """Managed policy names → ARNs from the list samtranslator ships (no IAM call)."""

        def load(self):
            return get_bundled_managed_policy_map(PSEUDO["AWS::Partition"]) or {}

    template = copy.deepcopy(template)
    for resource in template.get("Resources", {}).values():
        # What `sam deploy` does before CloudFormation sees the template: the local code is uploaded.
        properties = resource.get("Properties", {})
        if resource.get("Type") == "AWS::Serverless::Function" and not str(properties.get("CodeUri", "s3:")).startswith("s3:"):
            properties["CodeUri"] = "s3://sam-artifacts-bucket/batch-processor.zip"
    values = dict(params)
    values.update({k: v for k, v in PSEUDO.items() if k in ("AWS::Region", "AWS::AccountId", "AWS::Partition")})
    return sam_transform(template, values, BundledPolicies())


def parameter_values(definitions: dict, given: dict) -> dict:
    unknown = set(given) - set(definitions)
    if unknown:
        raise TemplateError(f"not parameters of the template: {sorted(unknown)}")
    values = {}
    for name, definition in definitions.items():
        if name in given:
            raw = given[name]
        elif "Default" in definition:
            raw = definition["Default"]
        else:
            raise TemplateError(f"parameter {name} has no default: give it a value")
        raw = str(raw)
        allowed = definition.get("AllowedValues")
        if allowed is not None and raw not in [str(a) for a in allowed]:
            raise TemplateError(f"{name}={raw!r} is not one of {allowed}")
        pattern = definition.get("AllowedPattern")
        if pattern is not None and not re.fullmatch(pattern, raw):
            raise TemplateError(f"{name}={raw!r} does not match {pattern}")
        kind = definition.get("Type", "String")
        if kind == "Number":
            number = float(raw)
            if "MinValue" in definition and number < float(definition["MinValue"]):
                raise TemplateError(f"{name}={raw} is below MinValue {definition['MinValue']}")
            if "MaxValue" in definition and number > float(definition["MaxValue"]):
                raise TemplateError(f"{name}={raw} is above MaxValue {definition['MaxValue']}")
        if kind == "CommaDelimitedList":
            values[name] = [item.strip() for item in raw.split(",")]
        else:
            values[name] = raw
    return values


class Evaluator:
    def __init__(self, values: dict, condition_definitions: dict):
        self.values = dict(PSEUDO)
        self.values.update(values)
        self.definitions = condition_definitions
        self.conditions: dict = {}

    def condition(self, name: str) -> bool:
        if name not in self.conditions:
            if name not in self.definitions:
                raise TemplateError(f"unknown condition {name}")
            self.conditions[name] = self.truth(self.definitions[name])
        return self.conditions[name]

    def truth(self, node) -> bool:
        if isinstance(node, dict) and len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Condition":
                return self.condition(arg)
            if fn == "Fn::Equals":
                a, b = (self.resolve(x) for x in arg)
                return a == b
            if fn == "Fn::Not":
                return not self.truth(arg[0])
            if fn == "Fn::And":
                return all(self.truth(x) for x in arg)
            if fn == "Fn::Or":
                return any(self.truth(x) for x in arg)
        raise TemplateError(f"not a condition: {json.dumps(node)}")

    def resolve(self, node):
        """The value CloudFormation would use, as far as it is known before deploying."""
        if isinstance(node, list):
            out = [self.resolve(x) for x in node]
            return [x for x in out if x is not NoValue]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (fn, arg), = node.items()
            if fn == "Ref":
                if arg == "AWS::NoValue":
                    return NoValue
                if arg in self.values:
                    return self.values[arg]
                return node  # a resource: known once deployed
            if fn == "Fn::If":
                name, yes, no = arg
                return self.resolve(yes if self.condition(name) else no)
            if fn == "Fn::Join":
                separator, parts = arg
                parts = self.resolve(parts)
                if isinstance(parts, list) and all(isinstance(p, (str, int, float)) for p in parts):
                    return separator.join(str(p) for p in parts)
                return {fn: [separator, parts]}
            if fn == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else arg
                variables = self.resolve(variables)

                def substitute(match):
                    name = match.group(1)
                    if name in variables and isinstance(variables[name], str):
                        return variables[name]
                    value = self.values.get(name)
                    return str(value) if isinstance(value, (str, int, float)) else match.group(0)

                text = re.sub(r"\$\{([^!}][^}]*)\}", substitute, text)
                return text if not re.search(r"\$\{[^!]", text) else {fn: [text, variables] if variables else text}
            if fn == "Fn::Select":
                index, items = self.resolve(arg)
                if isinstance(items, list):
                    return items[int(index)]
                return {fn: [index, items]}
            if fn in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or", "Condition"):
                return self.truth(node)
        out = {}
        for key, value in node.items():
            value = self.resolve(value)
            if value is not NoValue:
                out[key] = value
        return out

    def section(self, entries: dict) -> dict:
        out = {}
        for name, entry in (entries or {}).items():
            if "Condition" in entry and not self.condition(entry["Condition"]):
                continue
            out[name] = self.resolve(entry)
        return out


def language_extensions(template: dict, values: dict) -> dict:
    """CloudFormation runs the transforms in the order the template lists them: AWS::LanguageExtensions
    first resolves parameters, conditions' `Fn::If` and the other intrinsics it can, before SAM sees
    the template. This is the implementation the SAM CLI ships for that transform."""
    transforms = template.get("Transform")
    transforms = [transforms] if isinstance(transforms, str) else list(transforms or [])
    if "AWS::LanguageExtensions" not in transforms:
        return template
    from samcli.lib.cfn_language_extensions.models import PseudoParameterValues
    from samcli.lib.cfn_language_extensions.sam_integration import process_template_for_sam_cli

    pseudo = PseudoParameterValues(
        region=PSEUDO["AWS::Region"], account_id=PSEUDO["AWS::AccountId"], stack_name=PSEUDO["AWS::StackName"],
        stack_id=PSEUDO["AWS::StackId"], partition=PSEUDO["AWS::Partition"], url_suffix=PSEUDO["AWS::URLSuffix"])
    expanded = process_template_for_sam_cli(template, parameter_values=dict(values), pseudo_parameters=pseudo)
    # That implementation resolves `Fn::Sub` as far as it can and returns a plain string even when a
    # `${Resource}` or `${Resource.Attr}` is left (CloudFormation keeps the Fn::Sub, or the ARN would hold
    # the text "${JobsApi}"): wrap such strings again. The template has no literal "${" outside Fn::Sub.
    placeholder = re.compile(r"\$\{[A-Za-z0-9]+(\.[A-Za-z0-9]+)?\}")

    def rewrap(node):
        if isinstance(node, str):
            return {"Fn::Sub": node} if placeholder.search(node) else node
        if isinstance(node, list):
            return [rewrap(x) for x in node]
        if isinstance(node, dict):
            if set(node) == {"Fn::Sub"}:
                return node
            return {k: rewrap(v) for k, v in node.items()}
        return node

    for section in ("Resources", "Outputs"):
        if section in expanded:
            expanded[section] = rewrap(expanded[section])
    rest = [t for t in transforms if t != "AWS::LanguageExtensions"]
    if rest:
        expanded["Transform"] = rest[0] if len(rest) == 1 else rest
    else:
        expanded.pop("Transform", None)
    return expanded


def cloudformation(template_path: Path, given: dict) -> dict:
    from samtranslator.yaml_helper import yaml_parse

    template = yaml_parse(template_path.read_text())
    definitions = template.get("Parameters", {})
    values = parameter_values(definitions, given)
    sam_values = {k: (",".join(v) if isinstance(v, list) else v) for k, v in values.items()}
    transformed = transform(language_extensions(template, sam_values), sam_values)
    evaluator = Evaluator(values, transformed.get("Conditions", {}))
    resources = evaluator.section(transformed.get("Resources", {}))
    outputs = evaluator.section(transformed.get("Outputs", {}))
    for name in transformed.get("Conditions", {}):
        evaluator.condition(name)
    return {
        "Parameters": {name: dict(d, Value=values[name]) for name, d in definitions.items()},
        "Conditions": evaluator.conditions,
        "Resources": resources,
        "Outputs": outputs,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", default=str(ROOT / "template.yaml"))
    parser.add_argument("--sets", metavar="JSON",
                        help='several parameter sets at once, e.g. [{"ScheduleEnabled": "false"}, {}]: prints a list')
    parser.add_argument("params", nargs="*", metavar="Key=Value")
    args = parser.parse_args()
    given = {}
    for pair in args.params:
        key, sep, value = pair.partition("=")
        if not sep:
            parser.error(f"{pair!r} is not Key=Value")
        given[key] = value
    try:
        if args.sets is not None:
            sets = json.loads(args.sets)
            result = [cloudformation(Path(args.template), dict(given, **one)) for one in sets]
        else:
            result = cloudformation(Path(args.template), given)
    except (TemplateError, json.JSONDecodeError) as e:
        print(f"cfn_template: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the transform's own errors (InvalidDocumentException…) say what is wrong
        print(f"cfn_template: the SAM transform failed: {e}", file=sys.stderr)
        for cause in getattr(e, "causes", []) or []:
            print(f"  {cause}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
