/* The chat templates `chat_template:` may name, written out here as Jinja (the same formats
 * the model families publish: ChatML, Llama 3 headers, Alpaca sections, Mistral [INST]). */
#include "config/config.h"

#include <string.h>

static const struct {
    const char *name;
    const char *jinja;
} templates[] = {
    {"chatml",
     "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
     "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}"
     "{{ '<|im_start|>assistant\\n' }}{% endif %}"},
    {"llama3",
     "{% for message in messages %}{% set content = '<|start_header_id|>' + message['role'] + "
     "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == "
     "0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if "
     "add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
     "{% endif %}"},
    {"alpaca",
     "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}{{ "
     "message['content'] + '\\n\\n' }}{% elif message['role'] == 'user' %}{{ '### "
     "Instruction:\\n' + message['content'] + '\\n\\n' }}{% elif message['role'] == 'assistant' "
     "%}{{ '### Response:\\n' + message['content'] + eos_token + '\\n\\n' }}{% endif %}{% endfor "
     "%}{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"},
    {"mistral",
     "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' "
     "+ message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ "
     "message['content'] + eos_token }}{% endif %}{% endfor %}"},
};

const char *smelt_chat_template_builtin(const char *name)
{
    for (size_t i = 0; i < sizeof templates / sizeof templates[0]; i++)
        if (strcmp(templates[i].name, name) == 0)
            return templates[i].jinja;
    return NULL;
}

const char *smelt_chat_template_names(void) { return "chatml, llama3, alpaca, mistral"; }

int smelt_chat_template_is_jinja(const char *text)
{
    return strstr(text, "{{") != NULL || strstr(text, "{%") != NULL;
}
