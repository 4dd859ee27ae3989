import { expect } from 'chai';
import { readFile, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { parse } from 'yaml';
import { crdFor, kinds, renderCrds } from '../../src/api/index.js';

const crdDir = join(import.meta.dirname, '..', '..', 'crds');

describe('CRDs', () => {
  it('crds/ holds exactly what `npm run crds` generates (run it after changing src/api)', async () => {
    const expected = renderCrds();
    const present = (await readdir(crdDir)).filter((f) => f.endsWith('.yaml')).sort();
    expect(present).to.deep.equal([...expected.keys()].sort());
    for (const [name, text] of expected) {
      expect(await readFile(join(crdDir, name), 'utf8'), `crds/${name} is stale: run npm run crds`).to.equal(text);
    }
  });

  it('gives every schema field a description, so kubectl explain teaches the whole API', () => {
    const missing: string[] = [];
    const walk = (node: Record<string, unknown>, path: string): void => {
      const props = node.properties as Record<string, Record<string, unknown>> | undefined;
      for (const [name, child] of Object.entries(props ?? {})) {
        const here = `${path}.${name}`;
        if (name !== 'metadata' && typeof child.description !== 'string') missing.push(here);
        walk(child, here);
      }
      if (node.items) walk(node.items as Record<string, unknown>, `${path}[]`);
    };
    for (const def of kinds) {
      const crd = crdFor(def) as { spec: { versions: { schema: { openAPIV3Schema: Record<string, unknown> } }[] } };
      walk(crd.spec.versions[0]!.schema.openAPIV3Schema, def.kind);
    }
    expect(missing).to.deep.equal([]);
  });

  it('emits structural schemas: no additionalProperties:false, no $ref, every property typed', () => {
    const problems: string[] = [];
    const walk = (node: Record<string, unknown>, path: string): void => {
      if (node.additionalProperties === false) problems.push(`${path}: additionalProperties false`);
      if ('$ref' in node) problems.push(`${path}: $ref`);
      if (!('type' in node) && !node['x-kubernetes-int-or-string'] && !node['x-kubernetes-preserve-unknown-fields']) problems.push(`${path}: untyped`);
      for (const [name, child] of Object.entries((node.properties ?? {}) as Record<string, Record<string, unknown>>)) walk(child, `${path}.${name}`);
      if (node.items) walk(node.items as Record<string, unknown>, `${path}[]`);
      if (typeof node.additionalProperties === 'object') walk(node.additionalProperties as Record<string, unknown>, `${path}{}`);
    };
    for (const name of renderCrds().keys()) {
      const crd = parse(renderCrds().get(name)!) as { spec: { versions: { schema: { openAPIV3Schema: Record<string, unknown> } }[] } };
      walk(crd.spec.versions[0]!.schema.openAPIV3Schema, name);
    }
    expect(problems).to.deep.equal([]);
  });

  it('gives every kind a status subresource, a short name and a Phase printer column', () => {
    for (const def of kinds) {
      const version = (crdFor(def) as { spec: { versions: Record<string, unknown>[] } }).spec.versions[0]!;
      expect(version.subresources, def.kind).to.deep.equal({ status: {} });
      expect(def.shortNames, def.kind).to.have.length.greaterThan(0);
      expect((version.additionalPrinterColumns as { name: string }[]).map((c) => c.name), def.kind).to.include('Phase');
    }
  });
});
