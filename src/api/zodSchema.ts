import type { FastifySchemaCompiler } from 'fastify';
import { z } from 'zod';
import { FactRefused } from '../facts/FactRefused.ts';

/**
 * Route schemas are written once, in zod (the same schemas as the policy stream's facts), and
 * turned into JSON Schema for the route definitions, from which @fastify/swagger generates the
 * OpenAPI document. Validation itself runs the zod schema (refinements included, which JSON
 * Schema cannot express): the validator compiler finds it again through this registry.
 */

const registry = new WeakMap<object, z.ZodType>();

export function zodSchema(schema: z.ZodType, description?: string): Record<string, unknown> {
  const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as Record<string, unknown>;
  delete json.$schema;
  if (description !== undefined) json.description = description;
  registry.set(json, schema);
  return json;
}

/** Documentation-only JSON Schema (responses): never used to validate. */
export function docSchema(schema: z.ZodType, description?: string): Record<string, unknown> {
  const json = z.toJSONSchema(schema, { io: 'output', unrepresentable: 'any' }) as Record<string, unknown>;
  delete json.$schema;
  if (description !== undefined) json.description = description;
  return json;
}

/** Dotted path of the first issue, naming an unknown key itself rather than its parent. */
export function issueField(issue: z.core.$ZodIssue): string {
  const path = issue.path.map(String);
  if (issue.code === 'unrecognized_keys' && issue.keys.length > 0) path.push(issue.keys[0]!);
  return path.join('.');
}

const PART_NAMES: Record<string, string> = { body: 'body', params: 'path parameter', querystring: 'query parameter' };

export const zodValidatorCompiler: FastifySchemaCompiler<unknown> = ({ schema, httpPart }) => {
  const zod = registry.get(schema as object);
  // Headers are checked by hooks (fastify copies header schemas, so they are not in the registry);
  // their schemas exist for the OpenAPI document only.
  if (zod === undefined) return () => true;
  return (data: unknown) => {
    const result = zod.safeParse(data ?? (httpPart === 'body' ? undefined : {}));
    if (result.success) return { value: result.data };
    const issue = result.error.issues[0]!;
    const field = issueField(issue) || (httpPart === 'body' ? 'body' : httpPart ?? 'request');
    const more = result.error.issues.length > 1 ? ` (and ${result.error.issues.length - 1} more)` : '';
    const part = PART_NAMES[httpPart ?? ''] ?? httpPart ?? 'request';
    const message =
      issue.code === 'unrecognized_keys'
        ? `unknown field ${field} in the ${part}: fields are strict, remove it${more}`
        : `${part} field ${field}: ${issue.message}${more}`;
    const error = new FactRefused('FACT_INVALID', 'invalid-input', message, { field });
    return { error };
  };
};
