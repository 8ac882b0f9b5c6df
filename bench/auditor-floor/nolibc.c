/* An auditor with no dependency at all (-nostdlib): what an auditor's own
 * namespace costs when nothing but the auditor is loaded into it. */
unsigned int la_version(unsigned int v) { return v; }
