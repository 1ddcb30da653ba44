/** Every architecture family this tool reads, and the model types each answers to. */
import { cohere2 } from './cohere2';
import { deepseek } from './deepseek';
import { falcon } from './falcon';
import { gemma } from './gemma';
import { gpt2 } from './gpt2';
import { gptBigcode } from './gptBigcode';
import { gptj } from './gptj';
import { gptNeox } from './gptNeox';
import { gptOss } from './gptOss';
import { granite } from './granite';
import type { Family } from './kit';
import { llama } from './llama';
import { mixtral } from './mixtral';
import { olmo2 } from './olmo2';
import { phi } from './phi';
import { phi3 } from './phi3';
import { qwen3 } from './qwen3';
import { smollm3 } from './smollm3';
import { stablelm } from './stablelm';
import { starcoder2 } from './starcoder2';

export const FAMILIES: readonly Family[] = [llama, qwen3, mixtral, granite, smollm3, gemma, olmo2, cohere2, gptOss, phi3, phi, stablelm, starcoder2, gpt2, gptBigcode, gptj, gptNeox, falcon, deepseek];

/** model_type → family. */
export const FAMILY_BY_MODEL_TYPE: ReadonlyMap<string, Family> = new Map(FAMILIES.flatMap((f) => f.modelTypes.map((t) => [t, f] as const)));
